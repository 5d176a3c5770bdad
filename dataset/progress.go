package dataset

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Progress prints one line per interval to w: done/total, rate and ETA.
// It is safe for concurrent use and owns no goroutine.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	what     string
	unit     string
	total    int64
	done     int64
	start    time.Time
	last     time.Time
	interval time.Duration
	now      func() time.Time
}

// NewProgress starts a progress report of total units (0 if unknown).
// unit "B" prints sizes in MiB.
func NewProgress(w io.Writer, what string, total int64, unit string) *Progress {
	now := time.Now()
	return &Progress{w: w, what: what, unit: unit, total: total, start: now, last: now, interval: time.Second, now: time.Now}
}

// Add counts n more units done, printing a line if the interval passed.
func (p *Progress) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if t := p.now(); t.Sub(p.last) >= p.interval {
		p.last = t
		p.print(t)
	}
}

// Finish prints the final line.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print(p.now())
}

func (p *Progress) fmtN(n float64) string {
	if p.unit == "B" {
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	}
	return fmt.Sprintf("%.0f %s", n, p.unit)
}

func (p *Progress) print(t time.Time) {
	el := t.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.done) / el
	}
	line := fmt.Sprintf("%s: %s", p.what, p.fmtN(float64(p.done)))
	if p.total > 0 {
		line += fmt.Sprintf(" / %s (%.1f%%)", p.fmtN(float64(p.total)), 100*float64(p.done)/float64(p.total))
	}
	line += fmt.Sprintf(", %s/s", p.fmtN(rate))
	if p.total > 0 && rate > 0 && p.done < p.total {
		eta := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		line += ", ETA " + eta.Round(time.Second).String()
	}
	line += fmt.Sprintf(", %s elapsed", time.Duration(el*float64(time.Second)).Round(100*time.Millisecond))
	fmt.Fprintln(p.w, line)
}

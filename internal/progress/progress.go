// Package progress draws one-line progress reports for long operations: a
// bar with rate and ETA on a terminal, or a plain line every Interval when
// the output is a pipe or a log file.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Bar reports progress of Total units of work. Safe for concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	unit     string
	total    int64
	done     int64
	start    time.Time
	last     time.Time
	interval time.Duration
	tty      bool
	extra    string
	now      func() time.Time
}

// New starts a bar writing to w (usually os.Stderr). total ≤ 0 means unknown.
func New(w io.Writer, label string, total int64, unit string) *Bar {
	b := &Bar{w: w, label: label, total: total, unit: unit, now: time.Now}
	b.start = b.now()
	b.tty = isTerminal(w)
	b.interval = 5 * time.Second
	if b.tty {
		b.interval = 200 * time.Millisecond
	}
	return b
}

// SetInterval changes how often a line is printed when not on a terminal.
func (b *Bar) SetInterval(d time.Duration) { b.mu.Lock(); b.interval = d; b.mu.Unlock() }

// Add records n more units done and the current status text (loss, acc...).
func (b *Bar) Add(n int64, status string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	b.extra = status
	if t := b.now(); t.Sub(b.last) >= b.interval || (b.total > 0 && b.done >= b.total) {
		b.last = t
		b.draw(false)
	}
}

// Done prints the final line.
func (b *Bar) Done(status string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.extra = status
	b.draw(true)
}

// Rate is units per second so far.
func (b *Bar) Rate() float64 {
	el := b.now().Sub(b.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(b.done) / el
}

func (b *Bar) draw(final bool) {
	el := b.now().Sub(b.start)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(b.done) / s
	}
	var sb strings.Builder
	sb.WriteString(b.label)
	if b.total > 0 {
		frac := min(float64(b.done)/float64(b.total), 1)
		const width = 24
		fill := int(frac * width)
		fmt.Fprintf(&sb, " [%s%s] %3.0f%% %d/%d", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), frac*100, b.done, b.total)
		eta := "?"
		if rate > 0 {
			eta = time.Duration(float64(b.total-b.done) / rate * float64(time.Second)).Round(time.Second).String()
		}
		fmt.Fprintf(&sb, " %.1f %s/s ETA %s", rate, b.unit, eta)
	} else {
		fmt.Fprintf(&sb, " %d %s %.1f %s/s", b.done, b.unit, rate, b.unit)
	}
	if b.extra != "" {
		sb.WriteString(" " + b.extra)
	}
	if final {
		fmt.Fprintf(&sb, " (%s)", el.Round(100*time.Millisecond))
	}
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", sb.String())
		if final {
			fmt.Fprintln(b.w)
		}
		return
	}
	fmt.Fprintln(b.w, sb.String())
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

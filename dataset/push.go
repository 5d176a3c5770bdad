package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ringtrain/ringtrain/objstore"
)

// CopyOptions tunes Copy.
type CopyOptions struct {
	// Parallel uploads (default 8).
	Parallel int
	// Progress receives bytes copied (may be nil).
	Progress *Progress
}

// CopyStats counts what Copy did.
type CopyStats struct {
	Copied, Skipped int
	Bytes           int64
}

// Copy uploads every object under srcPrefix in src to dstPrefix in dst, in
// parallel. Objects already in dst with the same size are skipped, so an
// interrupted copy resumes without re-sending what arrived: a Put is atomic
// (an S3 object appears only complete), so a present object is a whole one.
func Copy(ctx context.Context, src objstore.Store, srcPrefix string, dst objstore.Store, dstPrefix string, opt CopyOptions) (CopyStats, error) {
	var stats CopyStats
	if opt.Parallel <= 0 {
		opt.Parallel = 8
	}
	objs, err := src.List(ctx, srcPrefix)
	if err != nil {
		return stats, err
	}
	have, err := dst.List(ctx, dstPrefix)
	if err != nil {
		return stats, err
	}
	haveSize := make(map[string]int64, len(have))
	for _, o := range have {
		haveSize[o.Key] = o.Size
	}
	var todo []objstore.ObjectInfo
	var total int64
	for _, o := range objs {
		dk := dstPrefix + o.Key[len(srcPrefix):]
		if sz, ok := haveSize[dk]; ok && sz == o.Size {
			stats.Skipped++
			continue
		}
		todo = append(todo, o)
		total += o.Size
	}
	if opt.Progress != nil {
		opt.Progress.total = total
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan objstore.ObjectInfo)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		copied   atomic.Int64
		bytes    atomic.Int64
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for range min(opt.Parallel, max(len(todo), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range jobs {
				if err := copyOne(ctx, src, o, dst, dstPrefix+o.Key[len(srcPrefix):], opt.Progress); err != nil {
					fail(err)
					continue
				}
				copied.Add(1)
				bytes.Add(o.Size)
			}
		}()
	}
feed:
	for _, o := range todo {
		select {
		case jobs <- o:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	stats.Copied, stats.Bytes = int(copied.Load()), bytes.Load()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	opt.Progress.Finish()
	if firstErr != nil {
		return stats, fmt.Errorf("copy %s/%s to %s/%s: %d of %d objects copied: %w", src, srcPrefix, dst, dstPrefix, stats.Copied, len(todo), firstErr)
	}
	return stats, nil
}

func copyOne(ctx context.Context, src objstore.Store, o objstore.ObjectInfo, dst objstore.Store, key string, p *Progress) error {
	rc, err := src.Get(ctx, o.Key)
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = rc
	if p != nil {
		r = progressReader{r, p}
	}
	if err := dst.Put(ctx, key, r, o.Size); err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("upload %s: %w", o.Key, err)
	}
	return nil
}

type progressReader struct {
	r io.Reader
	p *Progress
}

func (pr progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Add(int64(n))
	return n, err
}

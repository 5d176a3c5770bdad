package dataset

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/ringtrain/ringtrain/objstore"
)

// SplitSummary describes one split folder of a dataset.
type SplitSummary struct {
	Name  string
	Index *Index // nil when Err is set
	Err   error
}

// Describe finds the split folders under prefix (train, val, ...) and
// indexes each (class folders or packed shards).
func Describe(ctx context.Context, st objstore.Store, prefix string) ([]SplitSummary, error) {
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var splits []string
	for _, o := range objs {
		first, rest, ok := strings.Cut(o.Key[len(prefix):], "/")
		if !ok || rest == "" || strings.HasPrefix(first, ".") {
			continue
		}
		if len(splits) == 0 || splits[len(splits)-1] != first {
			splits = append(splits, first)
		}
	}
	if len(splits) == 0 {
		return nil, fmt.Errorf("%s/%s: no split folders (train/, val/, ...): %w", st, prefix, objstore.ErrNotExist)
	}
	var out []SplitSummary
	for _, sp := range splits {
		ix, err := ScanFolders(ctx, st, prefix, sp, ScanOptions{})
		out = append(out, SplitSummary{Name: sp, Index: ix, Err: err})
	}
	return out, nil
}

// PrintSummary writes a human-readable listing of splits, classes, counts.
func PrintSummary(w io.Writer, where string, sums []SplitSummary) {
	for _, s := range sums {
		if s.Err != nil {
			fmt.Fprintf(w, "%s%s/: error: %v\n", where, s.Name, s.Err)
			continue
		}
		ix := s.Index
		layout := "class folders"
		var bytes int64
		if ix.Sharded() {
			layout = fmt.Sprintf("%d shards", len(ix.Shards))
			for _, sh := range ix.Shards {
				bytes += sh.Size
			}
		} else {
			for _, sm := range ix.Samples {
				bytes += sm.Size
			}
		}
		fmt.Fprintf(w, "%s%s/: %d samples, %d classes, %s, %.1f MiB\n", where, s.Name, len(ix.Samples), len(ix.Classes), layout, float64(bytes)/(1<<20))
		counts := ix.Counts()
		for i, c := range ix.Classes {
			name := ""
			if ix.ClassNames[i] != c {
				name = " (" + ix.ClassNames[i] + ")"
			}
			fmt.Fprintf(w, "  %4d  %-24s %8d\n", i, c+name, counts[i])
		}
	}
}

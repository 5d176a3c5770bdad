package dataset

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/ringtrain/ringtrain/objstore"
)

// Layout files.
const (
	// ClassIndexFile, at the dataset root, lists one class folder per line in
	// label order; an optional TAB and display name may follow the folder.
	ClassIndexFile = "classes.txt"
	// ShardIndexFile, inside a packed split folder, lists shards and samples.
	ShardIndexFile = "index.tsv"
)

// Sample is one labelled image of a split.
type Sample struct {
	// Key is the object holding the sample: the image file (class folders)
	// or the tar shard (packed).
	Key string
	// Name is the member name inside a shard ("" for files).
	Name  string
	Label int32
	// Offset and Size locate the image bytes inside a shard; for files
	// Offset is 0 and Size the object size.
	Offset, Size int64
}

// Index lists the samples of one split in a fixed order (sample id = position).
type Index struct {
	// Classes are folder names in label order; ClassNames their display names.
	Classes    []string
	ClassNames []string
	Samples    []Sample
	// Shards are the tar shards of a packed split, with their sizes.
	Shards []ShardInfo
}

// ShardInfo is one tar shard of a packed split.
type ShardInfo struct {
	Key   string
	Size  int64
	Count int
}

// Sharded reports whether the split is packed.
func (ix *Index) Sharded() bool { return len(ix.Shards) > 0 }

// Counts returns the number of samples per class.
func (ix *Index) Counts() []int {
	c := make([]int, len(ix.Classes))
	for _, s := range ix.Samples {
		c[s.Label]++
	}
	return c
}

// ScanOptions tunes ScanFolders.
type ScanOptions struct {
	// LabelsFile (key relative to the dataset root) labels a flat split
	// folder: lines "<file>[,| ]<class folder or label index>" as ILSVRC's
	// LOC_val_solution.csv; a header line is skipped. When empty,
	// "<split>_labels.txt" and "LOC_<split>_solution.csv" are tried.
	LabelsFile string
}

// ScanFolders indexes prefix+split laid out as class folders
// (split/<class>/<file>), or a flat split folder with a labels file. If the
// dataset root has classes.txt it fixes the classes and their order,
// otherwise the sorted folder names of the split do (as torchvision's
// ImageFolder). A class without files is an error naming it. If the split
// is packed (has index.tsv), the shard index is read instead.
func ScanFolders(ctx context.Context, st objstore.Store, prefix, split string, opt ScanOptions) (*Index, error) {
	dir := prefix + split + "/"
	where := st.String() + "/" + dir
	if rc, err := st.Get(ctx, dir+ShardIndexFile); err == nil {
		defer rc.Close()
		ix, err := ReadShardIndex(rc)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", where, ShardIndexFile, err)
		}
		for i := range ix.Shards {
			ix.Shards[i].Key = dir + ix.Shards[i].Key
		}
		for i := range ix.Samples {
			ix.Samples[i].Key = dir + ix.Samples[i].Key
		}
		return ix, nil
	} else if !errors.Is(err, objstore.ErrNotExist) {
		return nil, err
	}
	objs, err := st.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	classes, names, err := readClassIndex(ctx, st, prefix)
	if err != nil {
		return nil, err
	}
	type file struct {
		class, key string
		size       int64
	}
	var files, flat []file
	for _, o := range objs {
		rel := o.Key[len(dir):]
		if strings.HasPrefix(path.Base(rel), ".") {
			continue
		}
		class, rest, nested := strings.Cut(rel, "/")
		if !nested {
			flat = append(flat, file{key: o.Key, size: o.Size})
			continue
		}
		_ = rest
		files = append(files, file{class: class, key: o.Key, size: o.Size})
	}
	ix := &Index{}
	if len(files) == 0 && len(flat) > 0 {
		// Flat split: labels from a labels file.
		if classes == nil {
			return nil, fmt.Errorf("%s is a flat folder: it needs %s%s to define the classes", where, st.String()+"/"+prefix, ClassIndexFile)
		}
		labels, err := readLabelsFile(ctx, st, prefix, split, opt.LabelsFile, classes)
		if err != nil {
			return nil, err
		}
		for _, f := range flat {
			base := path.Base(f.key)
			l, ok := labels[base]
			if !ok {
				l, ok = labels[strings.TrimSuffix(base, path.Ext(base))]
			}
			if !ok {
				return nil, fmt.Errorf("%s%s: no label in the labels file", where, base)
			}
			ix.Samples = append(ix.Samples, Sample{Key: f.key, Label: l, Size: f.size})
		}
		ix.Classes, ix.ClassNames = classes, names
		return ix, nil
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no class folders with files: %w", where, objstore.ErrNotExist)
	}
	if classes == nil {
		for _, f := range files {
			if len(classes) == 0 || classes[len(classes)-1] != f.class {
				classes = append(classes, f.class) // List is sorted by key
			}
		}
		slices.Sort(classes)
		classes = slices.Compact(classes)
		names = classes
	}
	label := make(map[string]int32, len(classes))
	for i, c := range classes {
		label[c] = int32(i)
	}
	for _, f := range files {
		l, ok := label[f.class]
		if !ok {
			return nil, fmt.Errorf("%s%s: folder %q is not a class of %s%s", where, f.key[len(dir):], f.class, prefix, ClassIndexFile)
		}
		ix.Samples = append(ix.Samples, Sample{Key: f.key, Label: l, Size: f.size})
	}
	ix.Classes, ix.ClassNames = classes, names
	counts := ix.Counts()
	// Folders that exist but hold no files are visible in local stores only.
	if sd, ok := st.(interface {
		Subdirs(context.Context, string) ([]string, error)
	}); ok {
		if dirs, err := sd.Subdirs(ctx, dir); err == nil {
			for _, d := range dirs {
				if l, ok := label[d]; ok && counts[l] == 0 {
					return nil, fmt.Errorf("%s%s/: class folder is empty", where, d)
				}
			}
		}
	}
	for i, c := range counts {
		if c == 0 {
			return nil, fmt.Errorf("%s%s/: class %q has no files", where, classes[i], names[i])
		}
	}
	return ix, nil
}

// readClassIndex reads prefix+classes.txt; nil, nil when absent.
func readClassIndex(ctx context.Context, st objstore.Store, prefix string) (classes, names []string, err error) {
	rc, err := st.Get(ctx, prefix+ClassIndexFile)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	classes, names, err = ParseClassIndex(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s/%s%s: %w", st.String(), prefix, ClassIndexFile, err)
	}
	return classes, names, nil
}

// ParseClassIndex reads a class index: one "folder[\tdisplay name]" per line.
func ParseClassIndex(r io.Reader) (classes, names []string, err error) {
	sc := bufio.NewScanner(r)
	seen := map[string]bool{}
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		folder, name, ok := strings.Cut(line, "\t")
		if !ok {
			name = folder
		}
		if folder == "" || strings.Contains(folder, "/") || seen[folder] {
			return nil, nil, fmt.Errorf("line %d: bad or repeated class folder %q", ln, folder)
		}
		seen[folder] = true
		classes = append(classes, folder)
		names = append(names, name)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(classes) == 0 {
		return nil, nil, errors.New("no classes")
	}
	return classes, names, nil
}

// FormatClassIndex writes the class index file contents.
func FormatClassIndex(classes, names []string) []byte {
	var b bytes.Buffer
	for i, c := range classes {
		b.WriteString(c)
		if names != nil && names[i] != c {
			b.WriteString("\t" + names[i])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func readLabelsFile(ctx context.Context, st objstore.Store, prefix, split, file string, classes []string) (map[string]int32, error) {
	cands := []string{file}
	if file == "" {
		cands = []string{split + "_labels.txt", "LOC_" + split + "_solution.csv"}
	}
	var rc io.ReadCloser
	var err error
	var used string
	for _, c := range cands {
		used = c
		if rc, err = st.Get(ctx, prefix+c); err == nil {
			break
		}
		if !errors.Is(err, objstore.ErrNotExist) {
			return nil, err
		}
	}
	if rc == nil {
		return nil, fmt.Errorf("%s/%s%s/ is a flat folder but no labels file was found (tried %v): %w", st.String(), prefix, split, cands, err)
	}
	defer rc.Close()
	label := make(map[string]int32, len(classes))
	for i, c := range classes {
		label[c] = int32(i)
	}
	out := map[string]int32{}
	sc := bufio.NewScanner(rc)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		if len(fields) < 2 {
			return nil, fmt.Errorf("%s line %d: want \"<file> <class>\", got %q", used, ln, line)
		}
		l, ok := label[fields[1]]
		if !ok {
			n, err := strconv.Atoi(fields[1])
			if err != nil || n < 0 || n >= len(classes) {
				if ln == 1 {
					continue // header
				}
				return nil, fmt.Errorf("%s line %d: %q is neither a class nor a label index", used, ln, fields[1])
			}
			l = int32(n)
		}
		out[fields[0]] = l
	}
	return out, sc.Err()
}

package dataset

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ringtrain/ringtrain/objstore"
)

// Packed splits are WebDataset-style tar shards: sample i is the members
// "<id>.<ext>" (the image bytes, unchanged) and "<id>.cls" (the label as
// decimal text), so WebDataset readers can use them too. index.tsv lets us
// read one sample with a range request instead of scanning a shard:
//
//	ringtrain-shards 1
//	class	<folder>	<display name>          (one per class, in label order)
//	shard	<key>	<size>	<count>           (key relative to the split folder)
//	<shard no>	<offset>	<size>	<label>	<member name>   (one per sample)

const shardIndexMagic = "ringtrain-shards 1"

// Limits on what an index may claim, so a corrupt one fails cleanly.
const (
	maxIndexClasses = 1 << 20
	maxShardBytes   = 1 << 40
)

// WriteShardIndex writes ix (sample keys must be its shard keys).
func WriteShardIndex(w io.Writer, ix *Index) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, shardIndexMagic)
	for i, c := range ix.Classes {
		fmt.Fprintf(bw, "class\t%s\t%s\n", c, ix.ClassNames[i])
	}
	shardNo := make(map[string]int, len(ix.Shards))
	for i, s := range ix.Shards {
		shardNo[s.Key] = i
		fmt.Fprintf(bw, "shard\t%s\t%d\t%d\n", s.Key, s.Size, s.Count)
	}
	for _, s := range ix.Samples {
		no, ok := shardNo[s.Key]
		if !ok {
			return fmt.Errorf("shard index: sample %s in unknown shard %q", s.Name, s.Key)
		}
		fmt.Fprintf(bw, "%d\t%d\t%d\t%d\t%s\n", no, s.Offset, s.Size, s.Label, s.Name)
	}
	return bw.Flush()
}

// ReadShardIndex parses and validates a shard index: every sample lies
// inside its shard, labels are classes, counts agree.
func ReadShardIndex(r io.Reader) (*Index, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() || strings.TrimRight(sc.Text(), "\r") != shardIndexMagic {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("shard index: %w", err)
		}
		return nil, fmt.Errorf("shard index: first line is not %q", shardIndexMagic)
	}
	ix := &Index{}
	counts := []int{}
	for ln := 2; sc.Scan(); ln++ {
		f := strings.Split(sc.Text(), "\t")
		bad := func(why string) error { return fmt.Errorf("shard index line %d: %s: %q", ln, why, sc.Text()) }
		switch f[0] {
		case "class":
			if len(f) != 3 || f[1] == "" || len(ix.Shards) > 0 || len(ix.Classes) >= maxIndexClasses {
				return nil, bad("bad class line")
			}
			ix.Classes = append(ix.Classes, f[1])
			ix.ClassNames = append(ix.ClassNames, f[2])
		case "shard":
			if len(f) != 4 || f[1] == "" || len(ix.Samples) > 0 {
				return nil, bad("bad shard line")
			}
			size, err1 := strconv.ParseInt(f[2], 10, 64)
			count, err2 := strconv.Atoi(f[3])
			if err1 != nil || err2 != nil || size < 0 || size > maxShardBytes || count < 0 {
				return nil, bad("bad shard size or count")
			}
			ix.Shards = append(ix.Shards, ShardInfo{Key: f[1], Size: size, Count: count})
			counts = append(counts, 0)
		default:
			if len(f) != 5 || f[4] == "" {
				return nil, bad("want 5 fields")
			}
			var v [4]int64
			for i := range v {
				n, err := strconv.ParseInt(f[i], 10, 64)
				if err != nil || n < 0 {
					return nil, bad("bad number")
				}
				v[i] = n
			}
			no, off, size, label := v[0], v[1], v[2], v[3]
			if no >= int64(len(ix.Shards)) {
				return nil, bad("shard number out of range")
			}
			if label >= int64(len(ix.Classes)) {
				return nil, bad("label out of range")
			}
			if off > ix.Shards[no].Size || size > ix.Shards[no].Size-off {
				return nil, bad("sample extends past the end of its shard")
			}
			counts[no]++
			ix.Samples = append(ix.Samples, Sample{Key: ix.Shards[no].Key, Name: f[4], Label: int32(label), Offset: off, Size: size})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("shard index: %w", err)
	}
	if len(ix.Classes) == 0 || len(ix.Shards) == 0 {
		return nil, errors.New("shard index: no classes or no shards")
	}
	for i, s := range ix.Shards {
		if counts[i] != s.Count {
			return nil, fmt.Errorf("shard index: shard %s claims %d samples, lists %d", s.Key, s.Count, counts[i])
		}
	}
	return ix, nil
}

// PackOptions tunes Pack.
type PackOptions struct {
	// ShardSize is the target shard size in bytes (default 128 MiB; the
	// useful range on object storage is 64–256 MB).
	ShardSize int64
	// Shuffle writes samples in the order Permutation(Seed, 0) so that
	// shard-sequential readers see mixed classes.
	Shuffle bool
	Seed    uint64
	// TempDir holds a shard while it is written (default os.TempDir()).
	TempDir string
	// Progress, if set, is called after each sample with bytes packed.
	Progress func(samples int, bytes int64)
}

// Pack copies the samples of src (an index of class folders in srcStore)
// into tar shards under dst/dstPrefix+split+"/" and writes its index.tsv;
// it returns the index of the packed split (keys relative to the store).
func Pack(ctx context.Context, srcStore objstore.Store, src *Index, dst objstore.Store, dstPrefix, split string, opt PackOptions) (*Index, error) {
	if opt.ShardSize <= 0 {
		opt.ShardSize = 128 << 20
	}
	order := make([]int32, len(src.Samples))
	if opt.Shuffle {
		Permutation(opt.Seed, 0, order)
	} else {
		for i := range order {
			order[i] = int32(i)
		}
	}
	dir := dstPrefix + split + "/"
	out := &Index{Classes: src.Classes, ClassNames: src.ClassNames}
	var (
		tmp    *os.File
		tw     *tar.Writer
		cw     *countingWriter
		bw     *bufio.Writer
		count  int
		start  = len(out.Samples)
		buf    []byte
		packed int64
	)
	flush := func() error {
		if tw == nil {
			return nil
		}
		if err := tw.Close(); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		key := fmt.Sprintf("shard-%06d.tar", len(out.Shards))
		size := cw.n
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := dst.Put(ctx, dir+key, tmp, size); err != nil {
			return err
		}
		tmp.Close()
		os.Remove(tmp.Name())
		out.Shards = append(out.Shards, ShardInfo{Key: key, Size: size, Count: count})
		for i := start; i < len(out.Samples); i++ {
			out.Samples[i].Key = key
		}
		tw, tmp, count, start = nil, nil, 0, len(out.Samples)
		return nil
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	mtime := time.Unix(0, 0)
	for n, i := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s := src.Samples[i]
		var err error
		buf, err = fetchAll(ctx, srcStore, s, buf[:0])
		if err != nil {
			return nil, err
		}
		if tw == nil {
			if tmp, err = os.CreateTemp(opt.TempDir, "ringtrain-shard-*.tar"); err != nil {
				return nil, fmt.Errorf("pack: %w", err)
			}
			bw = bufio.NewWriterSize(tmp, 1<<20)
			cw = &countingWriter{w: bw}
			tw = tar.NewWriter(cw)
		}
		ext := strings.ToLower(path.Ext(s.Key))
		if s.Name != "" {
			ext = strings.ToLower(path.Ext(s.Name))
		}
		id := fmt.Sprintf("%08d", n)
		if err := tw.WriteHeader(&tar.Header{Name: id + ext, Mode: 0o644, Size: int64(len(buf)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("pack %s: %w", s.Key, err)
		}
		off := cw.n // WriteHeader has written the header blocks: data starts here
		if _, err := tw.Write(buf); err != nil {
			return nil, fmt.Errorf("pack %s: %w", s.Key, err)
		}
		cls := strconv.Itoa(int(s.Label))
		if err := tw.WriteHeader(&tar.Header{Name: id + ".cls", Mode: 0o644, Size: int64(len(cls)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("pack %s: %w", s.Key, err)
		}
		if _, err := tw.Write([]byte(cls)); err != nil {
			return nil, fmt.Errorf("pack %s: %w", s.Key, err)
		}
		out.Samples = append(out.Samples, Sample{Name: id + ext, Label: s.Label, Offset: off, Size: int64(len(buf))})
		count++
		packed += int64(len(buf))
		if opt.Progress != nil {
			opt.Progress(n+1, packed)
		}
		if cw.n >= opt.ShardSize {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("pack shard %d: %w", len(out.Shards), err)
			}
		}
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("pack shard %d: %w", len(out.Shards), err)
	}
	var b bytes.Buffer
	if err := WriteShardIndex(&b, out); err != nil {
		return nil, err
	}
	if err := dst.Put(ctx, dir+ShardIndexFile, bytes.NewReader(b.Bytes()), int64(b.Len())); err != nil {
		return nil, err
	}
	for i := range out.Samples {
		out.Samples[i].Key = dir + out.Samples[i].Key
	}
	for i := range out.Shards {
		out.Shards[i].Key = dir + out.Shards[i].Key
	}
	return out, nil
}

// countingWriter counts bytes that reached the underlying writer's input.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// fetchAll reads the sample's bytes (whole file or shard range) into dst.
func fetchAll(ctx context.Context, st objstore.Store, s Sample, dst []byte) ([]byte, error) {
	var rc io.ReadCloser
	var err error
	if s.Name != "" {
		rg, ok := st.(objstore.RangeGetter)
		if !ok {
			return nil, fmt.Errorf("%s: store %s cannot read ranges of shards", s.Key, st)
		}
		rc, err = rg.GetRange(ctx, s.Key, s.Offset, s.Size)
	} else {
		rc, err = st.Get(ctx, s.Key)
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dst, err = readInto(rc, dst, s.Size)
	if err != nil {
		return nil, fmt.Errorf("read %s/%s%s: %w", st, s.Key, memberSuffix(s), err)
	}
	if s.Name != "" && int64(len(dst)) != s.Size {
		return nil, fmt.Errorf("read %s/%s%s: got %d bytes, index says %d", st, s.Key, memberSuffix(s), len(dst), s.Size)
	}
	return dst, nil
}

func memberSuffix(s Sample) string {
	if s.Name == "" {
		return ""
	}
	return "#" + s.Name
}

// readInto appends all of r to dst[:0], growing it once to hint bytes.
func readInto(r io.Reader, dst []byte, hint int64) ([]byte, error) {
	dst = dst[:0]
	if hint > 0 && int64(cap(dst)) < hint+1 {
		dst = make([]byte, 0, hint+1)
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

package dataset

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ringtrain/ringtrain/objstore"
)

// testImage encodes a w×h image with a pattern that depends on seed.
func testImage(t testing.TB, kind string, w, h, seed int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{uint8(x*7 + seed), uint8(y*5 + seed*3), uint8(x + y + seed*11), 255})
		}
	}
	var b bytes.Buffer
	var err error
	if kind == "png" {
		err = png.Encode(&b, img)
	} else {
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeFile(t testing.TB, root, rel string, data []byte) {
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeFolders lays out classes×per images under root/train.
func makeFolders(t testing.TB, root string, classes []string, per int) map[string][]byte {
	files := map[string][]byte{}
	for ci, c := range classes {
		for i := range per {
			kind := "jpg"
			if i%2 == 1 {
				kind = "png"
			}
			key := fmt.Sprintf("train/%s/img%03d.%s", c, i, kind)
			files[key] = testImage(t, kind, 20+i, 16+ci, ci*31+i)
			writeFile(t, root, key, files[key])
		}
	}
	return files
}

func localStore(t testing.TB, dir string) *objstore.Local {
	st, err := objstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readAllKey(t testing.TB, st objstore.Store, key string) []byte {
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScanFolders(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	files := makeFolders(t, root, []string{"cat", "ant", "dog"}, 3)
	writeFile(t, root, "train/.DS_Store", []byte("junk"))
	st := localStore(t, root)
	ix, err := ScanFolders(ctx, st, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ix.Classes, ",") != "ant,cat,dog" || len(ix.Samples) != 9 {
		t.Fatalf("classes %v, %d samples", ix.Classes, len(ix.Samples))
	}
	for _, s := range ix.Samples {
		if !strings.Contains(s.Key, "/"+ix.Classes[s.Label]+"/") || s.Size != int64(len(files[s.Key])) {
			t.Errorf("sample %+v: wrong label or size", s)
		}
	}
	// classes.txt fixes order and display names.
	writeFile(t, root, "classes.txt", []byte("dog\tGood dog\ncat\nant\n"))
	ix, err = ScanFolders(ctx, st, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ix.Classes, ",") != "dog,cat,ant" || ix.ClassNames[0] != "Good dog" {
		t.Fatalf("classes %v names %v", ix.Classes, ix.ClassNames)
	}
	for _, s := range ix.Samples {
		if !strings.Contains(s.Key, "/"+ix.Classes[s.Label]+"/") {
			t.Errorf("sample %s labelled %d", s.Key, s.Label)
		}
	}
	// A folder that is not in classes.txt is an error, not a silent label.
	writeFile(t, root, "train/emu/x.jpg", files["train/cat/img000.jpg"])
	if _, err := ScanFolders(ctx, st, "", "train", ScanOptions{}); err == nil || !strings.Contains(err.Error(), "emu") {
		t.Errorf("unknown folder: %v", err)
	}
	os.RemoveAll(filepath.Join(root, "train/emu"))
	// An empty class folder is an error naming it.
	os.MkdirAll(filepath.Join(root, "train/cow"), 0o755)
	writeFile(t, root, "classes.txt", []byte("dog\ncat\nant\ncow\n"))
	if _, err := ScanFolders(ctx, st, "", "train", ScanOptions{}); err == nil || !strings.Contains(err.Error(), "cow") {
		t.Errorf("empty class folder: %v", err)
	}
	if _, err := ScanFolders(ctx, st, "", "nothere", ScanOptions{}); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("missing split: %v", err)
	}
}

func TestScanFlatWithLabels(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st := localStore(t, root)
	writeFile(t, root, "classes.txt", []byte("n01440764\nn02119789\n"))
	for i := 1; i <= 4; i++ {
		writeFile(t, root, fmt.Sprintf("val/ILSVRC2012_val_%08d.JPEG", i), testImage(t, "jpg", 8, 8, i))
	}
	// ILSVRC's LOC_val_solution.csv: id, then boxes starting with the synset.
	writeFile(t, root, "LOC_val_solution.csv", []byte("ImageId,PredictionString\n"+
		"ILSVRC2012_val_00000001,n02119789 1 2 3 4 n02119789 5 6 7 8\n"+
		"ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"+
		"ILSVRC2012_val_00000003,n01440764 1 2 3 4\n"+
		"ILSVRC2012_val_00000004,n02119789 1 2 3 4\n"))
	ix, err := ScanFolders(ctx, st, "", "val", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{1, 0, 0, 1}
	for i, s := range ix.Samples {
		if s.Label != want[i] {
			t.Errorf("%s: label %d want %d", s.Key, s.Label, want[i])
		}
	}
	// A file without a label is an error naming it.
	writeFile(t, root, "val/ILSVRC2012_val_00000005.JPEG", testImage(t, "jpg", 8, 8, 5))
	if _, err := ScanFolders(ctx, st, "", "val", ScanOptions{}); err == nil || !strings.Contains(err.Error(), "00000005") {
		t.Errorf("unlabelled file: %v", err)
	}
}

func TestPackRoundTrip(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	files := makeFolders(t, root, []string{"a", "b", "c"}, 7)
	src := localStore(t, root)
	ix, err := ScanFolders(ctx, src, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := localStore(t, t.TempDir())
	packed, err := Pack(ctx, src, ix, dst, "packed/", "train", PackOptions{ShardSize: 4000, Shuffle: true, Seed: 3, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(packed.Shards) < 3 {
		t.Errorf("want several shards of ~4000 bytes, got %d", len(packed.Shards))
	}
	// Read back through the index file, as a reader would.
	back, err := ScanFolders(ctx, dst, "packed/", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Samples) != len(ix.Samples) || !back.Sharded() {
		t.Fatalf("%d samples back, want %d", len(back.Samples), len(ix.Samples))
	}
	// Every original file appears exactly once, byte-exact, with its label.
	type key struct {
		data  string
		label int32
	}
	want := map[key]int{}
	for _, s := range ix.Samples {
		want[key{string(files[s.Key]), s.Label}]++
	}
	for _, s := range back.Samples {
		b, err := fetchAll(ctx, dst, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		k := key{string(b), s.Label}
		if want[k] == 0 {
			t.Fatalf("sample %s/%s: bytes or label %d not in the source", s.Key, s.Name, s.Label)
		}
		want[k]--
	}
	// Shards are plain tars with WebDataset .cls members.
	for _, sh := range back.Shards {
		tr := tar.NewReader(bytes.NewReader(readAllKey(t, dst, sh.Key)))
		n := 0
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", sh.Key, err)
			}
			if strings.HasSuffix(h.Name, ".cls") {
				n++
			}
		}
		if n != sh.Count {
			t.Errorf("%s: %d .cls members, index says %d", sh.Key, n, sh.Count)
		}
	}
}

func TestShardIndexRoundTripAndErrors(t *testing.T) {
	ix := &Index{Classes: []string{"a", "b"}, ClassNames: []string{"A", "b"},
		Shards:  []ShardInfo{{Key: "s0.tar", Size: 100, Count: 2}},
		Samples: []Sample{{Key: "s0.tar", Name: "0.jpg", Label: 1, Offset: 512, Size: 10}, {Key: "s0.tar", Name: "1.png", Label: 0, Offset: 10, Size: 90}}}
	ix.Shards[0].Size = 1000
	var b bytes.Buffer
	if err := WriteShardIndex(&b, ix); err != nil {
		t.Fatal(err)
	}
	back, err := ReadShardIndex(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back) != fmt.Sprint(ix) {
		t.Errorf("round trip:\n%v\n%v", back, ix)
	}
	good := b.String()
	for name, bad := range map[string]string{
		"magic":        strings.Replace(good, "ringtrain-shards 1", "tar", 1),
		"past end":     strings.Replace(good, "0\t512\t10\t1", "0\t995\t10\t1", 1),
		"label":        strings.Replace(good, "0\t512\t10\t1", "0\t512\t10\t2", 1),
		"shard number": strings.Replace(good, "0\t512\t10\t1", "1\t512\t10\t1", 1),
		"count":        strings.Replace(good, "1000\t2", "1000\t3", 1),
		"negative":     strings.Replace(good, "0\t512\t10\t1", "0\t-5\t10\t1", 1),
		"fields":       good + "0\t1\t2\n",
		"empty":        "",
	} {
		if _, err := ReadShardIndex(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzShardIndex(f *testing.F) {
	f.Add([]byte("ringtrain-shards 1\nclass\ta\tA\nshard\ts.tar\t100\t1\n0\t0\t10\t0\tx.jpg\n"))
	f.Add([]byte("ringtrain-shards 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ReadShardIndex(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, s := range ix.Samples {
			if s.Offset+s.Size > maxShardBytes || int(s.Label) >= len(ix.Classes) {
				t.Fatalf("accepted invalid sample %+v", s)
			}
		}
		var b bytes.Buffer
		if err := WriteShardIndex(&b, ix); err != nil {
			t.Fatal(err)
		}
		again, err := ReadShardIndex(&b)
		if err != nil || len(again.Samples) != len(ix.Samples) {
			t.Fatalf("re-read: %v", err)
		}
	})
}

// failingStore fails every Put after the first n.
type failingStore struct {
	objstore.Store
	left atomic.Int64
}

func (f *failingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if f.left.Add(-1) < 0 {
		return errors.New("injected failure")
	}
	return f.Store.Put(ctx, key, r, size)
}

func TestCopyResumes(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	files := makeFolders(t, root, []string{"a", "b"}, 10)
	src := localStore(t, root)
	dst := localStore(t, t.TempDir())
	fs := &failingStore{Store: dst}
	fs.left.Store(7)
	st, err := Copy(ctx, src, "train/", fs, "ds/train/", CopyOptions{Parallel: 3})
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("interrupted copy: %v", err)
	}
	// In-flight uploads are cancelled after the failure: 1..7 arrive.
	have, _ := dst.List(ctx, "ds/")
	if st.Copied < 1 || st.Copied > 7 || len(have) != st.Copied {
		t.Errorf("copied %d (%d present) before the failure, want 1..7", st.Copied, len(have))
	}
	first := st.Copied
	var sink bytes.Buffer
	st, err = Copy(ctx, src, "train/", dst, "ds/train/", CopyOptions{Parallel: 3, Progress: NewProgress(&sink, "push", 0, "B")})
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != first || st.Copied != 20-first {
		t.Errorf("resume: %+v, want %d skipped, %d copied", st, first, 20-first)
	}
	for k, v := range files {
		if !bytes.Equal(readAllKey(t, dst, "ds/"+k), v) {
			t.Errorf("%s differs", k)
		}
	}
	if !strings.Contains(sink.String(), "push:") {
		t.Errorf("no progress line: %q", sink.String())
	}
}

func TestImportMNIST(t *testing.T) {
	train, test, err := LoadMNIST("mnist")
	if err != nil {
		t.Skipf("MNIST not available: %v", err)
	}
	ctx := context.Background()
	dst := localStore(t, t.TempDir())
	if err := importArrays(ctx, "mnist", train, test, dst, "mnist/", ImportOptions{Limit: 30}); err != nil {
		t.Fatal(err)
	}
	sums, err := Describe(ctx, dst, "mnist/")
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 2 || sums[0].Name != "train" || sums[1].Name != "val" || sums[0].Err != nil {
		t.Fatalf("splits %+v", sums)
	}
	ix := sums[0].Index
	if len(ix.Samples) != 30 {
		t.Fatalf("%d samples", len(ix.Samples))
	}
	for _, s := range ix.Samples {
		var i int
		fmt.Sscanf(s.Key[strings.LastIndex(s.Key, "/")+1:], "%05d.png", &i)
		if s.Label != train.Labels[i] {
			t.Fatalf("%s: label %d, MNIST says %d", s.Key, s.Label, train.Labels[i])
		}
		img, err := png.Decode(bytes.NewReader(readAllKey(t, dst, s.Key)))
		if err != nil {
			t.Fatal(err)
		}
		g := img.(*image.Gray)
		for j, v := range train.Sample(i) {
			if float32(g.Pix[j])/255 != v {
				t.Fatalf("%s pixel %d differs", s.Key, j)
			}
		}
	}
	var out bytes.Buffer
	PrintSummary(&out, "mnist/", sums)
	if !strings.Contains(out.String(), "train/: 30 samples, 10 classes") {
		t.Errorf("summary:\n%s", out.String())
	}
}

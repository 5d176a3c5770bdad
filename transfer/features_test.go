package transfer

import (
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/objstore"
)

// features --data: every sample of a class-folder split, in index order,
// with its label, through the same loader as training.
func TestDatasetFeaturesOverClassFolders(t *testing.T) {
	root := t.TempDir()
	for c, class := range []string{"dark", "light"} {
		dir := filepath.Join(root, "val", class)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			img := image.NewGray(image.Rect(0, 0, 20, 24))
			for p := range img.Pix {
				img.Pix[p] = uint8(40 + 150*c + 10*i)
			}
			img.Set(i, i, color.Gray{Y: 255})
			f, err := os.Create(filepath.Join(dir, string(rune('a'+i))+".png"))
			if err != nil {
				t.Fatal(err)
			}
			png.Encode(f, img)
			f.Close()
		}
	}
	store, ix, err := OpenSplit(context.Background(), filepath.Join(root, "val"), objstore.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := nets.Build("lenet", nets.Config{Classes: 2, NoTop: true, Pooling: "avg"})
	if err != nil {
		t.Fatal(err)
	}
	var progress []int
	feats, labels, err := DatasetFeatures(context.Background(), m, nil, store, ix,
		dataset.TransformConfig{Size: 28, Channels: 1}, 4, func(done int) { progress = append(progress, done) })
	if err != nil {
		t.Fatal(err)
	}
	if len(labels) != 6 || len(feats) != 6*m.Out.Size() {
		t.Fatalf("%d labels, %d floats; want 6 samples of %v", len(labels), len(feats), m.Out)
	}
	for i, l := range labels {
		if want := ix.Samples[i].Label; l != want {
			t.Fatalf("sample %d: label %d, index says %d", i, l, want)
		}
	}
	if len(progress) != 2 || progress[1] != 6 {
		t.Fatalf("progress calls %v, want [4 6]", progress)
	}
	// Dark and light images must not collapse to the same features.
	k := m.Out.Size()
	same := true
	for j := 0; j < k; j++ {
		if feats[j] != feats[5*k+j] {
			same = false
		}
	}
	if same {
		t.Fatal("features do not depend on the image")
	}
}

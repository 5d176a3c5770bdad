package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ringtrain/ringtrain/objstore"
)

// Layout: <prefix>/<run>/step-000001234/{weights.safetensors,
// optim.safetensors, manifest.json}. Large tensor sets are split into
// weights-00001-of-00003.safetensors and so on. The manifest is written last
// and deleted first, so a reader that finds one finds every blob it names;
// sha256 sums catch blobs damaged afterwards.

// ManifestName is the file name of the manifest inside a checkpoint folder.
const ManifestName = "manifest.json"

// ErrCorrupt is wrapped by errors about a checkpoint whose blobs are missing
// or do not match the manifest's sizes and hashes.
var ErrCorrupt = errors.New("checkpoint corrupt")

// ErrNoCheckpoint means no complete, intact checkpoint was found.
var ErrNoCheckpoint = errors.New("no good checkpoint")

// StoreConfig configures a Store.
type StoreConfig struct {
	Prefix        string // key prefix, no trailing slash needed; may be empty
	Run           string // run name, one path segment
	KeepLast      int    // retention: keep the newest KeepLast checkpoints; 0 keeps all
	BestMetric    string // retention: also keep the best by this metric (e.g. "val_acc"); empty for none
	LowerIsBetter bool   // BestMetric is a loss rather than an accuracy
	MaxShardBytes int64  // split tensor sets above this size; 0 means 2 GiB
	Logger        *slog.Logger
}

// Validate names the first bad field.
func (c *StoreConfig) Validate() error {
	switch {
	case c.Run == "" || strings.ContainsAny(c.Run, "/\\") || c.Run == "." || c.Run == "..":
		return fmt.Errorf("checkpoint store config: Run %q is not a plain name", c.Run)
	case c.KeepLast < 0:
		return fmt.Errorf("checkpoint store config: KeepLast %d is negative", c.KeepLast)
	case c.MaxShardBytes < 0:
		return fmt.Errorf("checkpoint store config: MaxShardBytes %d is negative", c.MaxShardBytes)
	}
	return nil
}

// Store saves and loads the checkpoints of one run. Safe for concurrent
// readers; one writer per run at a time.
type Store struct {
	objs objstore.Store
	cfg  StoreConfig
	log  *slog.Logger
}

// Checkpoint is a manifest with its tensors.
type Checkpoint struct {
	Manifest Manifest
	Weights  []Tensor
	Optim    []Tensor
}

// Entry is one checkpoint folder found by List.
type Entry struct {
	Step     int64
	Dir      string    // key prefix of the folder, ending in '/'
	Manifest *Manifest // nil when absent or unreadable
	Err      error     // why Manifest is nil, when a manifest object exists
	Size     int64     // bytes of all objects in the folder
	Objects  int
}

// Complete reports whether the folder has a readable manifest.
func (e Entry) Complete() bool { return e.Manifest != nil }

// Skipped records a checkpoint Latest passed over and why.
type Skipped struct {
	Step int64
	Err  error
}

// BlobProblem is one damaged or missing blob.
type BlobProblem struct {
	Blob    string
	Problem string
}

// VerifyError lists every damaged blob of a checkpoint; it wraps ErrCorrupt.
type VerifyError struct {
	Step     int64
	Problems []BlobProblem
}

func (e *VerifyError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Blob + ": " + p.Problem
	}
	return fmt.Sprintf("checkpoint step %d: %s", e.Step, strings.Join(parts, "; "))
}

func (e *VerifyError) Unwrap() error { return ErrCorrupt }

// NewStore returns a Store for cfg.Run over objs.
func NewStore(objs objstore.Store, cfg StoreConfig) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxShardBytes == 0 {
		cfg.MaxShardBytes = 2 << 30
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Store{objs: objs, cfg: cfg, log: log.With("run", cfg.Run)}, nil
}

func (s *Store) runDir() string {
	if s.cfg.Prefix == "" {
		return s.cfg.Run + "/"
	}
	return s.cfg.Prefix + "/" + s.cfg.Run + "/"
}

// StepDir is the folder (key prefix ending in '/') of a step's checkpoint.
func (s *Store) StepDir(step int64) string {
	return fmt.Sprintf("%sstep-%09d/", s.runDir(), step)
}

func (s *Store) String() string { return s.objs.String() + "/" + s.runDir() }

// Save writes weights and optimizer state as safetensors blobs, then the
// manifest m completed with the blob list, run and time; then applies
// retention. It returns the manifest as written.
func (s *Store) Save(ctx context.Context, m Manifest, weights, optim []Tensor) (Manifest, error) {
	m.Version = FormatVersion
	m.Run = s.cfg.Run
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	m.Blobs = nil
	dir := s.StepDir(m.Step)
	// A manifest left from an earlier save of this step must vanish before
	// its blobs change under it.
	if err := s.objs.Delete(ctx, dir+ManifestName); err != nil {
		return m, fmt.Errorf("save step %d: delete old manifest in %s: %w", m.Step, s.objs, err)
	}
	start := time.Now()
	for _, set := range []struct {
		kind string
		ts   []Tensor
	}{{KindWeights, weights}, {KindOptim, optim}} {
		if set.kind == KindOptim && len(set.ts) == 0 {
			continue
		}
		shards := splitShards(set.ts, s.cfg.MaxShardBytes)
		for i, sh := range shards {
			name := set.kind + ".safetensors"
			if len(shards) > 1 {
				name = fmt.Sprintf("%s-%05d-of-%05d.safetensors", set.kind, i+1, len(shards))
			}
			meta := map[string]string{"format": "pt", "ringtrain.kind": set.kind, "ringtrain.step": strconv.FormatInt(m.Step, 10)}
			b, err := s.putTensors(ctx, dir+name, sh, meta)
			if err != nil {
				return m, fmt.Errorf("save step %d: %w", m.Step, err)
			}
			b.Name, b.Kind = name, set.kind
			m.Blobs = append(m.Blobs, b)
		}
	}
	mb, err := m.Marshal()
	if err != nil {
		return m, fmt.Errorf("save step %d: %w", m.Step, err)
	}
	if err := s.objs.Put(ctx, dir+ManifestName, bytes.NewReader(mb), int64(len(mb))); err != nil {
		return m, fmt.Errorf("save step %d: put manifest to %s: %w", m.Step, s.objs, err)
	}
	var total int64
	for _, b := range m.Blobs {
		total += b.Size
	}
	el := time.Since(start)
	s.log.Info("checkpoint saved", "step", m.Step, "epoch", m.Epoch, "dir", dir, "bytes", total,
		"seconds", el.Seconds(), "MiB/s", float64(total)/(1<<20)/max(el.Seconds(), 1e-9))
	if s.cfg.KeepLast > 0 {
		if removed, err := s.Prune(ctx); err != nil {
			s.log.Warn("checkpoint retention failed", "step", m.Step, "err", err)
		} else if len(removed) > 0 {
			s.log.Info("checkpoint retention", "removed_steps", removed)
		}
	}
	return m, nil
}

// putTensors streams a safetensors blob to key, hashing it on the way.
func (s *Store) putTensors(ctx context.Context, key string, ts []Tensor, meta map[string]string) (Blob, error) {
	size, err := SafetensorsSize(ts, meta)
	if err != nil {
		return Blob{}, fmt.Errorf("encode %s: %w", key, err)
	}
	pr, pw := io.Pipe()
	h := sha256.New()
	done := make(chan error, 1)
	go func() {
		_, err := WriteSafetensors(io.MultiWriter(pw, h), ts, meta)
		pw.CloseWithError(err)
		done <- err
	}()
	perr := s.objs.Put(ctx, key, pr, size)
	pr.CloseWithError(errors.New("put finished")) // unblocks the writer if Put stopped early
	werr := <-done
	if perr != nil {
		return Blob{}, fmt.Errorf("put %s to %s: %w", key, s.objs, perr)
	}
	if werr != nil {
		return Blob{}, fmt.Errorf("encode %s: %w", key, werr)
	}
	return Blob{Size: size, SHA256: hex.EncodeToString(h.Sum(nil)), Tensors: len(ts)}, nil
}

// splitShards groups tensors in order into sets of at most max data bytes
// (a single larger tensor gets a shard of its own).
func splitShards(ts []Tensor, maxBytes int64) [][]Tensor {
	var out [][]Tensor
	var cur []Tensor
	var n int64
	for _, t := range ts {
		dt := t.DType
		if dt == "" {
			dt = F32
		}
		b := int64(len(t.Data)) * int64(dt.Size())
		if len(cur) > 0 && n+b > maxBytes {
			out = append(out, cur)
			cur, n = nil, 0
		}
		cur = append(cur, t)
		n += b
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, cur)
	}
	return out
}

// parseStepDir extracts the step from "step-000001234".
func parseStepDir(name string) (int64, bool) {
	digits, ok := strings.CutPrefix(name, "step-")
	if !ok || digits == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil && n >= 0
}

// List returns every checkpoint folder of the run, oldest step first, with
// its manifest read (but blobs not verified).
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	objs, err := s.objs.List(ctx, s.runDir())
	if err != nil {
		return nil, fmt.Errorf("list checkpoints in %s: %w", s, err)
	}
	byStep := map[int64]*Entry{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, s.runDir())
		dirName, file, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		step, ok := parseStepDir(dirName)
		if !ok {
			continue
		}
		e := byStep[step]
		if e == nil {
			e = &Entry{Step: step, Dir: s.runDir() + dirName + "/"}
			byStep[step] = e
		}
		e.Size += o.Size
		e.Objects++
		if file == ManifestName {
			m, err := s.readManifest(ctx, o.Key)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				e.Err = err
			} else if m.Step != step {
				e.Err = fmt.Errorf("manifest %s says step %d: %w", o.Key, m.Step, ErrCorrupt)
			} else {
				e.Manifest = &m
			}
		}
	}
	out := make([]Entry, 0, len(byStep))
	for _, e := range byStep {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out, nil
}

func (s *Store) readManifest(ctx context.Context, key string) (Manifest, error) {
	rc, err := s.objs.Get(ctx, key)
	if err != nil {
		return Manifest{}, fmt.Errorf("get manifest %s: %w", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest %s: %w", key, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w: %w", key, ErrCorrupt, err)
	}
	return m, nil
}

// Manifest reads and validates the manifest of one step.
func (s *Store) Manifest(ctx context.Context, step int64) (Manifest, error) {
	return s.readManifest(ctx, s.StepDir(step)+ManifestName)
}

// fetchBlob reads one blob, checking size and hash. A problem with the blob
// itself comes back as a non-empty string; I/O trouble as an error.
func (s *Store) fetchBlob(ctx context.Context, dir string, b Blob, keep bool) ([]byte, string, error) {
	rc, err := s.objs.Get(ctx, dir+b.Name)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, "missing", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("get %s%s: %w", dir, b.Name, err)
	}
	defer rc.Close()
	h := sha256.New()
	var buf bytes.Buffer
	var w io.Writer = h
	if keep {
		buf.Grow(int(min(b.Size, 256<<20))) // the manifest may lie; grow past this on demand
		w = io.MultiWriter(h, &buf)
	}
	n, err := io.Copy(w, io.LimitReader(rc, b.Size+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s%s: %w", dir, b.Name, err)
	}
	if n != b.Size {
		return nil, fmt.Sprintf("size %d, manifest says %d", n, b.Size), nil
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return nil, fmt.Sprintf("sha256 %s, manifest says %s", got[:12], b.SHA256[:12]), nil
	}
	return buf.Bytes(), "", nil
}

// Verify checks every blob of a step against its manifest. It returns a
// *VerifyError (wrapping ErrCorrupt) naming each bad blob.
func (s *Store) Verify(ctx context.Context, step int64) error {
	_, err := s.load(ctx, step, false)
	return err
}

// Load reads and verifies one step's checkpoint.
func (s *Store) Load(ctx context.Context, step int64) (*Checkpoint, error) {
	return s.load(ctx, step, true)
}

func (s *Store) load(ctx context.Context, step int64, decode bool) (*Checkpoint, error) {
	m, err := s.Manifest(ctx, step)
	if err != nil {
		return nil, err
	}
	if m.Step != step {
		return nil, fmt.Errorf("checkpoint step %d: manifest says step %d: %w", step, m.Step, ErrCorrupt)
	}
	dir := s.StepDir(step)
	ck := &Checkpoint{Manifest: m}
	verr := &VerifyError{Step: step}
	for _, b := range m.Blobs {
		raw, problem, err := s.fetchBlob(ctx, dir, b, decode)
		if err != nil {
			return nil, fmt.Errorf("checkpoint step %d: %w", step, err)
		}
		if problem != "" {
			verr.Problems = append(verr.Problems, BlobProblem{Blob: b.Name, Problem: problem})
			continue
		}
		if !decode {
			continue
		}
		ts, _, err := DecodeSafetensors(raw)
		if err != nil { // hash matched, so the writer wrote garbage
			verr.Problems = append(verr.Problems, BlobProblem{Blob: b.Name, Problem: err.Error()})
			continue
		}
		if b.Kind == KindWeights {
			ck.Weights = append(ck.Weights, ts...)
		} else {
			ck.Optim = append(ck.Optim, ts...)
		}
	}
	if len(verr.Problems) > 0 {
		return nil, verr
	}
	return ck, nil
}

// Latest loads the newest checkpoint that verifies, skipping (and logging)
// newer ones that are partial or corrupt. It returns ErrNoCheckpoint when
// none is good.
func (s *Store) Latest(ctx context.Context) (*Checkpoint, []Skipped, error) {
	return s.LatestWhere(ctx, nil)
}

// LatestWhere is Latest among the checkpoints whose manifest keep accepts
// (nil accepts all). Folders without a readable manifest cannot be
// attributed and are reported as skipped either way.
func (s *Store) LatestWhere(ctx context.Context, keep func(*Manifest) bool) (*Checkpoint, []Skipped, error) {
	entries, err := s.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	var skipped []Skipped
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Manifest != nil && keep != nil && !keep(e.Manifest) {
			continue
		}
		if e.Manifest == nil {
			err := e.Err
			if err == nil {
				err = fmt.Errorf("no manifest (partial or in progress)")
			}
			skipped = append(skipped, Skipped{Step: e.Step, Err: err})
			continue
		}
		ck, err := s.Load(ctx, e.Step)
		if err == nil {
			return ck, skipped, nil
		}
		if !errors.Is(err, ErrCorrupt) {
			return nil, skipped, err
		}
		s.log.Warn("skipping corrupt checkpoint", "step", e.Step, "err", err)
		skipped = append(skipped, Skipped{Step: e.Step, Err: err})
	}
	return nil, skipped, fmt.Errorf("%s: %w", s, ErrNoCheckpoint)
}

// Prune applies retention: it keeps the newest KeepLast complete
// checkpoints and the best one by BestMetric, and removes every other
// folder older than the newest kept one (newer incomplete folders may be
// saves in progress). Manifests go first, so readers never see a
// checkpoint with blobs missing. It returns the removed steps.
func (s *Store) Prune(ctx context.Context) ([]int64, error) {
	if s.cfg.KeepLast <= 0 {
		return nil, nil
	}
	entries, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	keep := map[int64]bool{}
	var newest int64 = -1
	best, bestStep := 0.0, int64(-1)
	kept := 0
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Manifest == nil {
			continue
		}
		if kept < s.cfg.KeepLast {
			keep[e.Step] = true
			kept++
			newest = max(newest, e.Step)
		}
		if s.cfg.BestMetric != "" {
			if v, ok := e.Manifest.Metric(s.cfg.BestMetric); ok {
				better := v > best
				if s.cfg.LowerIsBetter {
					better = v < best
				}
				if bestStep < 0 || better {
					best, bestStep = v, e.Step
				}
			}
		}
	}
	if bestStep >= 0 {
		keep[bestStep] = true
	}
	var removed []int64
	for _, e := range entries {
		if keep[e.Step] || e.Step >= newest {
			continue
		}
		if err := s.removeDir(ctx, e.Dir); err != nil {
			return removed, err
		}
		removed = append(removed, e.Step)
	}
	return removed, nil
}

func (s *Store) removeDir(ctx context.Context, dir string) error {
	if err := s.objs.Delete(ctx, dir+ManifestName); err != nil {
		return fmt.Errorf("delete %s%s: %w", dir, ManifestName, err)
	}
	objs, err := s.objs.List(ctx, dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, o := range objs {
		if err := s.objs.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("delete %s: %w", o.Key, err)
		}
	}
	return nil
}

// ListRuns returns the run names under prefix in objs.
func ListRuns(ctx context.Context, objs objstore.Store, prefix string) ([]string, error) {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	all, err := objs.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list runs in %s: %w", objs, err)
	}
	seen := map[string]bool{}
	var runs []string
	for _, o := range all {
		rest := strings.TrimPrefix(o.Key, prefix)
		run, file, ok := strings.Cut(rest, "/")
		if !ok || !strings.HasSuffix(file, "/"+ManifestName) || seen[run] {
			continue
		}
		if d, _, _ := strings.Cut(file, "/"); !strings.HasPrefix(d, "step-") {
			continue
		}
		seen[run] = true
		runs = append(runs, run)
	}
	return runs, nil
}

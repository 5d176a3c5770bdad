package checkpoint

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Reading torch.save files. The zip format (PyTorch >= 1.6): <dir>/data.pkl
// is a pickle whose persistent ids ("storage", torch.FloatStorage, key,
// location, numel) name raw little-endian blobs <dir>/data/<key>; tensors
// are torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...).
// The legacy format is a stream of pickles: magic number, protocol version,
// sys info, the object, the storage keys, then each storage as an int64
// element count followed by its bytes.

type torchStorage struct {
	dtype DType
	key   string
	numel int64
	data  []byte // nil until loaded
}

type torchTensor struct {
	st     *torchStorage
	offset int64
	shape  []int
	stride []int
}

var storageTypes = map[string]DType{
	"FloatStorage": F32, "HalfStorage": F16, "BFloat16Storage": BF16, "DoubleStorage": F64,
	"LongStorage": I64, "IntStorage": I32, "ShortStorage": I16, "CharStorage": I8,
	"ByteStorage": U8, "BoolStorage": Bool,
}

func storageDType(v any) (DType, error) {
	g, ok := v.(pyGlobal)
	if !ok || g.Module != "torch" {
		return "", fmt.Errorf("storage type %v is not a torch storage class", v)
	}
	dt, ok := storageTypes[g.Name]
	if !ok {
		return "", fmt.Errorf("unsupported storage type %s", g)
	}
	return dt, nil
}

func asInt(v any) (int64, bool) {
	i, ok := v.(int64)
	return i, ok
}

func intTuple(v any, what string) ([]int, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("%s is %T, want a tuple", what, v)
	}
	out := make([]int, len(t))
	for i, x := range t {
		n, ok := asInt(x)
		if !ok || n < 0 || n > maxElems {
			return nil, fmt.Errorf("%s[%d] = %v is not a size", what, i, x)
		}
		out[i] = int(n)
	}
	return out, nil
}

// torchCall models the few torch functions state dicts use.
func torchCall(g pyGlobal, args pyTuple) (any, error) {
	switch g.String() {
	case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
		if len(args) < 4 {
			return nil, fmt.Errorf("%d arguments, want at least 4", len(args))
		}
		st, ok := args[0].(*torchStorage)
		if !ok {
			return nil, fmt.Errorf("storage argument is %T", args[0])
		}
		off, ok := asInt(args[1])
		if !ok || off < 0 {
			return nil, fmt.Errorf("storage offset %v", args[1])
		}
		shape, err := intTuple(args[2], "size")
		if err != nil {
			return nil, err
		}
		stride, err := intTuple(args[3], "stride")
		if err != nil {
			return nil, err
		}
		if len(stride) != len(shape) {
			return nil, fmt.Errorf("size %v and stride %v differ in rank", shape, stride)
		}
		return &torchTensor{st: st, offset: off, shape: shape, stride: stride}, nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) < 1 {
			return nil, fmt.Errorf("no arguments")
		}
		return args[0], nil
	case "torch._tensor._rebuild_from_type_v2", "torch._tensor._rebuild_from_type":
		if len(args) < 3 {
			return nil, fmt.Errorf("%d arguments, want 3 or more", len(args))
		}
		fn, ok := args[0].(pyGlobal)
		inner, ok2 := args[2].(pyTuple)
		if !ok || !ok2 {
			return nil, fmt.Errorf("bad arguments %T, %T", args[0], args[2])
		}
		return torchCall(fn, inner)
	}
	return nil, nil
}

// maxPickleBytes bounds data.pkl; state dicts' pickles are kilobytes.
const maxPickleBytes = 256 << 20

// ReadPTH reads a torch.save file (zip or legacy format) and returns every
// tensor found, with nested dicts flattened into dotted names, in the order
// the file stores them.
func ReadPTH(r io.ReaderAt, size int64) ([]Tensor, error) {
	var magic [4]byte
	if size < 4 {
		return nil, fmt.Errorf("pth: file of %d bytes: %w", size, ErrFormat)
	}
	if _, err := r.ReadAt(magic[:], 0); err != nil {
		return nil, fmt.Errorf("pth: read magic: %w", err)
	}
	if string(magic[:]) == "PK\x03\x04" {
		return readTorchZip(r, size)
	}
	if isLegacyPickle(magic) {
		if size > 1<<34 {
			return nil, fmt.Errorf("pth: legacy file of %d bytes too large", size)
		}
		b := make([]byte, size)
		if _, err := r.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("pth: read legacy file: %w", err)
		}
		return readTorchLegacy(b)
	}
	return nil, fmt.Errorf("pth: neither a zip (torch >= 1.6) nor a legacy pickle file (tar-based files from torch < 0.4 are not supported): %w", ErrFormat)
}

// isLegacyPickle recognises the start of torch's legacy format: PROTO n,
// then LONG1 of 10 bytes (the magic number).
func isLegacyPickle(m [4]byte) bool {
	return m[0] == 0x80 && m[1] <= 5 && m[2] == 0x8a && m[3] == 0x0a
}

func readTorchZip(r io.ReaderAt, size int64) ([]Tensor, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("pth: open zip: %w: %w", ErrFormat, err)
	}
	files := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	for _, f := range zr.File {
		files[f.Name] = f
		if path.Base(f.Name) == "data.pkl" && strings.Count(f.Name, "/") == 1 {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("pth: no <archive>/data.pkl in zip: %w", ErrFormat)
	}
	dir := path.Dir(pkl.Name) + "/"
	if _, ok := files[dir+"constants.pkl"]; ok {
		return nil, fmt.Errorf("pth: a TorchScript archive; save model.state_dict() with torch.save instead: %w", ErrFormat)
	}
	if f, ok := files[dir+"byteorder"]; ok {
		b, err := readZipFile(f, 16)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(b)) != "little" {
			return nil, fmt.Errorf("pth: byteorder %q not supported: %w", b, ErrFormat)
		}
	}
	pb, err := readZipFile(pkl, maxPickleBytes)
	if err != nil {
		return nil, err
	}
	load := func(st *torchStorage) error {
		f, ok := files[dir+"data/"+st.key]
		if !ok {
			return fmt.Errorf("storage %q: no record %sdata/%s: %w", st.key, dir, st.key, ErrFormat)
		}
		b, err := readZipFile(f, st.numel*int64(st.dtype.Size()))
		if err != nil {
			return err
		}
		st.data = b
		return nil
	}
	return decodeTorchPickle(pb, load)
}

// readZipFile reads a zip member of at most limit bytes.
func readZipFile(f *zip.File, limit int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("pth: open %s: %w", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("pth: read %s: %w", f.Name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("pth: %s is larger than %d bytes: %w", f.Name, limit, ErrFormat)
	}
	return b, nil
}

// decodeTorchPickle runs a zip-format data.pkl; load fills a storage's data.
func decodeTorchPickle(pkl []byte, load func(*torchStorage) error) ([]Tensor, error) {
	storages := map[string]*torchStorage{}
	u := &unpickler{buf: pkl, call: torchCall}
	u.persistentLoad = func(pid any) (any, error) {
		t, ok := pid.(pyTuple)
		if !ok || len(t) < 5 || t[0] != "storage" {
			return nil, fmt.Errorf("persistent id %v is not a storage: %w", pid, ErrFormat)
		}
		dt, err := storageDType(t[1])
		if err != nil {
			return nil, err
		}
		key, ok := t[2].(string)
		numel, ok2 := asInt(t[4])
		if !ok || !ok2 || numel < 0 || numel > maxElems {
			return nil, fmt.Errorf("storage id %v: bad key or size: %w", pid, ErrFormat)
		}
		if st, ok := storages[key]; ok {
			if st.dtype != dt || st.numel != numel {
				return nil, fmt.Errorf("storage %q used as %s[%d] and %s[%d]: %w", key, st.dtype, st.numel, dt, numel, ErrFormat)
			}
			return st, nil
		}
		st := &torchStorage{dtype: dt, key: key, numel: numel}
		if err := load(st); err != nil {
			return nil, err
		}
		storages[key] = st
		return st, nil
	}
	root, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("pth: data.pkl: %w", err)
	}
	return collectTensors(root)
}

var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

func readTorchLegacy(b []byte) ([]Tensor, error) {
	u := &unpickler{buf: b}
	next := func(what string) (any, error) {
		u.memo = nil
		v, err := u.load()
		if err != nil {
			return nil, fmt.Errorf("pth (legacy): %s: %w", what, err)
		}
		return v, nil
	}
	magic, err := next("magic number")
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, fmt.Errorf("pth (legacy): bad magic number %v: %w", magic, ErrFormat)
	}
	if v, err := next("protocol version"); err != nil {
		return nil, err
	} else if v != int64(1001) {
		return nil, fmt.Errorf("pth (legacy): protocol version %v, want 1001: %w", v, ErrFormat)
	}
	sys, err := next("sys info")
	if err != nil {
		return nil, err
	}
	if d, ok := sys.(*pyDict); ok {
		if i, ok := d.idx["little_endian"]; ok && d.vals[i] != true {
			return nil, fmt.Errorf("pth (legacy): big-endian file not supported: %w", ErrFormat)
		}
	}
	storages := map[string]*torchStorage{}
	u.call = torchCall
	u.persistentLoad = func(pid any) (any, error) {
		t, ok := pid.(pyTuple)
		if !ok || len(t) < 6 || t[0] != "storage" {
			return nil, fmt.Errorf("persistent id %v is not a storage: %w", pid, ErrFormat)
		}
		dt, err := storageDType(t[1])
		if err != nil {
			return nil, err
		}
		key, ok := t[2].(string)
		numel, ok2 := asInt(t[4])
		if !ok || !ok2 || numel < 0 || numel > maxElems {
			return nil, fmt.Errorf("storage id %v: bad key or size: %w", pid, ErrFormat)
		}
		if t[5] != nil {
			return nil, fmt.Errorf("storage %q: storage views are not supported: %w", key, ErrFormat)
		}
		if st, ok := storages[key]; ok {
			return st, nil
		}
		st := &torchStorage{dtype: dt, key: key, numel: numel}
		storages[key] = st
		return st, nil
	}
	root, err := next("object")
	if err != nil {
		return nil, err
	}
	u.call, u.persistentLoad = nil, nil
	keysV, err := next("storage keys")
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*pyList)
	if !ok {
		return nil, fmt.Errorf("pth (legacy): storage keys are %T: %w", keysV, ErrFormat)
	}
	for _, k := range keys.items {
		key, _ := k.(string)
		st, ok := storages[key]
		if !ok {
			return nil, fmt.Errorf("pth (legacy): unknown storage key %v: %w", k, ErrFormat)
		}
		n, err := u.uint(8)
		if err != nil {
			return nil, fmt.Errorf("pth (legacy): storage %q: %w", key, err)
		}
		if int64(n) != st.numel {
			return nil, fmt.Errorf("pth (legacy): storage %q has %d elements, pickle says %d: %w", key, n, st.numel, ErrFormat)
		}
		data, err := u.read(int(st.numel) * st.dtype.Size())
		if err != nil {
			return nil, fmt.Errorf("pth (legacy): storage %q data: %w", key, err)
		}
		st.data = data
	}
	return collectTensors(root)
}

// collectTensors flattens dicts of tensors (nested dicts get dotted names).
func collectTensors(root any) ([]Tensor, error) {
	var out []Tensor
	seen := map[string]bool{}
	visited := map[*pyDict]bool{}
	var walk func(v any, prefix string, depth int) error
	walk = func(v any, prefix string, depth int) error {
		if depth > 32 {
			return fmt.Errorf("pth: dicts nested deeper than 32 at %q: %w", prefix, ErrFormat)
		}
		switch x := v.(type) {
		case *torchTensor:
			if prefix == "" {
				return fmt.Errorf("pth: a tensor without a name (the file holds a bare tensor or an empty key): %w", ErrFormat)
			}
			if seen[prefix] {
				return fmt.Errorf("pth: duplicate tensor name %q: %w", prefix, ErrFormat)
			}
			seen[prefix] = true
			t, err := x.materialize(prefix)
			if err != nil {
				return err
			}
			out = append(out, t)
		case *pyDict:
			// Pickles can build cycles and shared sub-dicts through the
			// memo; walk each dict once.
			if visited[x] {
				return nil
			}
			visited[x] = true
			for i, k := range x.keys {
				ks, ok := k.(string)
				if !ok {
					continue
				}
				name := ks
				if prefix != "" {
					name = prefix + "." + ks
				}
				if err := walk(x.vals[i], name, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pth: no tensors found in a %T: %w", root, ErrFormat)
	}
	return out, nil
}

// maxExpandedElems bounds tensors larger than their storage.
const maxExpandedElems = 1 << 20

// materialize copies the (possibly strided) view out of its storage.
func (t *torchTensor) materialize(name string) (Tensor, error) {
	n, err := checkedNumel(t.shape)
	if err != nil {
		return Tensor{}, fmt.Errorf("pth: tensor %q: %w: %w", name, ErrFormat, err)
	}
	st := t.st
	es := st.dtype.Size()
	// Zero strides let a tiny storage claim a huge tensor; allow modest
	// expansion (torch saves expanded views as they are) but no bombs.
	if int64(n) > st.numel && n > maxExpandedElems {
		return Tensor{}, fmt.Errorf("pth: tensor %q: shape %v expands a %d-element storage: %w", name, t.shape, st.numel, ErrFormat)
	}
	if int64(len(st.data)) != st.numel*int64(es) {
		return Tensor{}, fmt.Errorf("pth: tensor %q: storage %q has %d bytes, want %d: %w", name, st.key, len(st.data), st.numel*int64(es), ErrFormat)
	}
	out := Tensor{Name: name, Shape: append([]int{}, t.shape...), DType: st.dtype, Data: make([]float32, n)}
	if n == 0 {
		return out, nil
	}
	last := t.offset
	contiguous := true
	want := 1
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.stride[i] < 0 {
			return Tensor{}, fmt.Errorf("pth: tensor %q: negative stride %v: %w", name, t.stride, ErrFormat)
		}
		last += int64(t.shape[i]-1) * int64(t.stride[i])
		if t.shape[i] != 1 && t.stride[i] != want {
			contiguous = false
		}
		want *= t.shape[i]
	}
	if last >= st.numel {
		return Tensor{}, fmt.Errorf("pth: tensor %q: offset %d size %v stride %v reaches element %d of a %d-element storage: %w",
			name, t.offset, t.shape, t.stride, last, st.numel, ErrFormat)
	}
	if contiguous {
		b := st.data[t.offset*int64(es) : (t.offset+int64(n))*int64(es)]
		if err := decodeElems(out.Data, b, st.dtype); err != nil {
			return Tensor{}, fmt.Errorf("pth: tensor %q: %w", name, err)
		}
		return out, nil
	}
	idx := make([]int, len(t.shape))
	one := make([]float32, 1)
	for i := range out.Data {
		off := t.offset
		for d, x := range idx {
			off += int64(x) * int64(t.stride[d])
		}
		if err := decodeElems(one, st.data[off*int64(es):(off+1)*int64(es)], st.dtype); err != nil {
			return Tensor{}, err
		}
		out.Data[i] = one[0]
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < t.shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}

// ReadTensorFile reads a .pth (zip or legacy) or .safetensors file, telling
// them apart by content. Safetensors metadata is returned when present.
func ReadTensorFile(name string) ([]Tensor, map[string]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	if string(magic[:]) == "PK\x03\x04" || isLegacyPickle(magic) {
		ts, err := ReadPTH(f, fi.Size())
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return ts, nil, nil
	}
	sf, err := ReadSafetensors(f, fi.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	ts, err := sf.Tensors()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return ts, sf.Metadata, nil
}

// WriteSafetensorsFile writes ts to name atomically (temp file + rename).
func WriteSafetensorsFile(name string, ts []Tensor, meta map[string]string) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*.safetensors")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := WriteSafetensors(tmp, ts, meta); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	return os.Rename(tmp.Name(), name)
}

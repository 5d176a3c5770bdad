package checkpoint

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// The safetensors format: an 8-byte little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {string: string}}, then the raw little-endian data; offsets are relative
// to the first byte after the header.

// maxHeaderBytes bounds the JSON header, as the reference implementation does.
const maxHeaderBytes = 100 << 20

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("malformed tensor file")

// STEntry describes one tensor in a safetensors header.
type STEntry struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64 // byte offsets relative to the data section
}

// SafetensorsFile is a parsed header over a random-access source; tensors
// are read on demand.
type SafetensorsFile struct {
	Entries  []STEntry // in header order
	Metadata map[string]string
	r        io.ReaderAt
	dataAt   int64
	index    map[string]int
}

// ReadSafetensors parses the header of a safetensors file of size bytes.
func ReadSafetensors(r io.ReaderAt, size int64) (*SafetensorsFile, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, fmt.Errorf("safetensors: file of %d bytes has no header length: %w", size, ErrFormat)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeaderBytes || n > uint64(size-8) {
		return nil, fmt.Errorf("safetensors: header length %d exceeds limit or file size %d: %w", n, size, ErrFormat)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("safetensors: read header of %d bytes: %w", n, err)
	}
	f, err := parseSTHeader(hdr, size-8-int64(n))
	if err != nil {
		return nil, err
	}
	f.r, f.dataAt = r, 8+int64(n)
	return f, nil
}

// DecodeSafetensors reads every tensor of an in-memory safetensors file.
func DecodeSafetensors(b []byte) ([]Tensor, map[string]string, error) {
	f, err := ReadSafetensors(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, nil, err
	}
	// Decode straight from b rather than through ReadAt copies.
	out := make([]Tensor, 0, len(f.Entries))
	for _, e := range f.Entries {
		raw := b[f.dataAt+e.Begin : f.dataAt+e.End]
		data := make([]float32, len(raw)/e.DType.Size())
		if err := decodeElems(data, raw, e.DType); err != nil {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: %w", e.Name, err)
		}
		out = append(out, Tensor{Name: e.Name, Shape: append([]int{}, e.Shape...), DType: e.DType, Data: data})
	}
	return out, f.Metadata, nil
}

type stJSONEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int   `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

func parseSTHeader(hdr []byte, dataLen int64) (*SafetensorsFile, error) {
	f := &SafetensorsFile{index: map[string]int{}}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	bad := func(format string, args ...any) error {
		return fmt.Errorf("safetensors header: "+format+": %w", append(args, ErrFormat)...)
	}
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, bad("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad("key: %v", err)
		}
		name, _ := tok.(string)
		if name == "__metadata__" {
			if f.Metadata != nil {
				return nil, bad("duplicate __metadata__")
			}
			if err := dec.Decode(&f.Metadata); err != nil {
				return nil, bad("__metadata__: %v", err)
			}
			if f.Metadata == nil {
				f.Metadata = map[string]string{}
			}
			continue
		}
		var e stJSONEntry
		if err := dec.Decode(&e); err != nil {
			return nil, bad("tensor %q: %v", name, err)
		}
		if name == "" {
			return nil, bad("empty tensor name")
		}
		if _, dup := f.index[name]; dup {
			return nil, bad("duplicate tensor %q", name)
		}
		dt := DType(e.DType)
		if dt.Size() == 0 {
			return nil, bad("tensor %q: unsupported dtype %q", name, e.DType)
		}
		if len(e.DataOffsets) != 2 {
			return nil, bad("tensor %q: data_offsets has %d values, want 2", name, len(e.DataOffsets))
		}
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || end < b || end > dataLen {
			return nil, bad("tensor %q: data_offsets [%d, %d] outside data of %d bytes", name, b, end, dataLen)
		}
		n, err := checkedNumel(e.Shape)
		if err != nil {
			return nil, bad("tensor %q: %v", name, err)
		}
		if int64(n)*int64(dt.Size()) != end-b {
			return nil, bad("tensor %q: shape %v of %s needs %d bytes, offsets give %d", name, e.Shape, dt, int64(n)*int64(dt.Size()), end-b)
		}
		shape := e.Shape
		if shape == nil {
			shape = []int{}
		}
		f.index[name] = len(f.Entries)
		f.Entries = append(f.Entries, STEntry{Name: name, DType: dt, Shape: shape, Begin: b, End: end})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, bad("unterminated object")
	}
	// Only trailing padding may follow the object.
	rest, _ := io.ReadAll(dec.Buffered())
	if len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return nil, bad("trailing bytes after header object")
	}
	// Tensors must not overlap.
	byOff := make([]STEntry, len(f.Entries))
	copy(byOff, f.Entries)
	sort.Slice(byOff, func(i, j int) bool { return byOff[i].Begin < byOff[j].Begin })
	for i := 1; i < len(byOff); i++ {
		if byOff[i].Begin < byOff[i-1].End {
			return nil, bad("tensors %q and %q overlap", byOff[i-1].Name, byOff[i].Name)
		}
	}
	return f, nil
}

// Names lists the tensors in header order.
func (f *SafetensorsFile) Names() []string {
	out := make([]string, len(f.Entries))
	for i, e := range f.Entries {
		out[i] = e.Name
	}
	return out
}

// Tensor reads one tensor and converts it to float32.
func (f *SafetensorsFile) Tensor(name string) (Tensor, error) {
	i, ok := f.index[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: no tensor %q", name)
	}
	e := f.Entries[i]
	raw := make([]byte, e.End-e.Begin)
	if _, err := f.r.ReadAt(raw, f.dataAt+e.Begin); err != nil {
		return Tensor{}, fmt.Errorf("safetensors: read tensor %q: %w", name, err)
	}
	data := make([]float32, len(raw)/e.DType.Size())
	if err := decodeElems(data, raw, e.DType); err != nil {
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	return Tensor{Name: name, Shape: append([]int{}, e.Shape...), DType: e.DType, Data: data}, nil
}

// Tensors reads every tensor in header order.
func (f *SafetensorsFile) Tensors() ([]Tensor, error) {
	out := make([]Tensor, 0, len(f.Entries))
	for _, e := range f.Entries {
		t, err := f.Tensor(e.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// decodeElems converts little-endian elements of type dt into dst;
// len(src) must be len(dst)*dt.Size().
func decodeElems(dst []float32, src []byte, dt DType) error {
	sz := dt.Size()
	if sz == 0 || len(src) != len(dst)*sz {
		return fmt.Errorf("decode %d bytes of %q into %d values: %w", len(src), dt, len(dst), ErrFormat)
	}
	le := binary.LittleEndian
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = f16ToF32(le.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = bf16ToF32(le.Uint16(src[2*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(le.Uint64(src[8*i:])))
		}
	case I64:
		for i := range dst {
			dst[i] = float32(int64(le.Uint64(src[8*i:])))
		}
	case I32:
		for i := range dst {
			dst[i] = float32(int32(le.Uint32(src[4*i:])))
		}
	case I16:
		for i := range dst {
			dst[i] = float32(int16(le.Uint16(src[2*i:])))
		}
	case I8:
		for i := range dst {
			dst[i] = float32(int8(src[i]))
		}
	case U8:
		for i := range dst {
			dst[i] = float32(src[i])
		}
	case Bool:
		for i := range dst {
			dst[i] = 0
			if src[i] != 0 {
				dst[i] = 1
			}
		}
	default:
		return fmt.Errorf("unsupported dtype %q: %w", dt, ErrFormat)
	}
	return nil
}

// encodeElems is the inverse of decodeElems; integer types truncate toward zero.
func encodeElems(dst []byte, src []float32, dt DType) {
	le := binary.LittleEndian
	switch dt {
	case F32, "":
		for i, v := range src {
			le.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], f32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], f32ToBF16(v))
		}
	case F64:
		for i, v := range src {
			le.PutUint64(dst[8*i:], math.Float64bits(float64(v)))
		}
	case I64:
		for i, v := range src {
			le.PutUint64(dst[8*i:], uint64(int64(v)))
		}
	case I32:
		for i, v := range src {
			le.PutUint32(dst[4*i:], uint32(int32(v)))
		}
	case I16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], uint16(int16(v)))
		}
	case I8:
		for i, v := range src {
			dst[i] = byte(int8(v))
		}
	case U8:
		for i, v := range src {
			dst[i] = byte(v)
		}
	case Bool:
		for i, v := range src {
			dst[i] = 0
			if v != 0 {
				dst[i] = 1
			}
		}
	}
}

// stHeader builds the padded JSON header for ts.
func stHeader(ts []Tensor, meta map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	if len(meta) > 0 {
		mb, err := json.Marshal(meta)
		if err != nil {
			return nil, fmt.Errorf("safetensors: metadata: %w", err)
		}
		buf.WriteString(`"__metadata__":`)
		buf.Write(mb)
		first = false
	}
	seen := make(map[string]bool, len(ts))
	var off int64
	for _, t := range ts {
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("safetensors: %w", err)
		}
		if t.Name == "__metadata__" || seen[t.Name] {
			return nil, fmt.Errorf("safetensors: duplicate or reserved tensor name %q", t.Name)
		}
		seen[t.Name] = true
		dt := t.DType
		if dt == "" {
			dt = F32
		}
		n := int64(len(t.Data)) * int64(dt.Size())
		nb, _ := json.Marshal(t.Name)
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		sb, _ := json.Marshal(shape)
		if !first {
			buf.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&buf, `%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, nb, dt, sb, off, off+n)
		off += n
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	return buf.Bytes(), nil
}

// SafetensorsSize is the number of bytes WriteSafetensors will write.
func SafetensorsSize(ts []Tensor, meta map[string]string) (int64, error) {
	hdr, err := stHeader(ts, meta)
	if err != nil {
		return 0, err
	}
	n := 8 + int64(len(hdr))
	for _, t := range ts {
		dt := t.DType
		if dt == "" {
			dt = F32
		}
		n += int64(len(t.Data)) * int64(dt.Size())
	}
	return n, nil
}

// WriteSafetensors writes ts in order, each in its DType (F32 when empty),
// and returns the number of bytes written.
func WriteSafetensors(w io.Writer, ts []Tensor, meta map[string]string) (int64, error) {
	hdr, err := stHeader(ts, meta)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	cw := &countWriter{w: bw}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	cw.Write(lenBuf[:])
	cw.Write(hdr)
	const chunk = 1 << 14
	buf := make([]byte, chunk*8)
	for _, t := range ts {
		dt := t.DType
		if dt == "" {
			dt = F32
		}
		for i := 0; i < len(t.Data); i += chunk {
			part := t.Data[i:min(i+chunk, len(t.Data))]
			b := buf[:len(part)*dt.Size()]
			encodeElems(b, part, dt)
			if _, err := cw.Write(b); err != nil {
				return cw.n, fmt.Errorf("safetensors: write tensor %q: %w", t.Name, err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("safetensors: flush: %w", err)
	}
	return cw.n, cw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

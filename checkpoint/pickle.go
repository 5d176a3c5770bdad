package checkpoint

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// A small pickle virtual machine: enough of protocols 0-5 to read what
// torch.save writes, over an in-memory buffer so that no length field can
// make it allocate more than the input holds. It never imports or runs
// anything: globals become pyGlobal values, calls go to a hook.

type pyGlobal struct{ Module, Name string }

func (g pyGlobal) String() string { return g.Module + "." + g.Name }

type pyTuple []any

type pyList struct{ items []any }

// pyDict keeps insertion order, as Python dicts do. Keys must be hashable
// Go values (string, int64, bool, float64, nil, pyGlobal).
type pyDict struct {
	keys  []any
	vals  []any
	idx   map[any]int
	attrs any // state set by BUILD (OrderedDict's _metadata), ignored
}

func newPyDict() *pyDict { return &pyDict{idx: map[any]int{}} }

func (d *pyDict) set(k, v any) error {
	switch k.(type) {
	case string, int64, bool, float64, nil, pyGlobal:
	default:
		return fmt.Errorf("unhashable dict key of type %T", k)
	}
	if i, ok := d.idx[k]; ok {
		d.vals[i] = v
		return nil
	}
	d.idx[k] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

// pyObject is an instance of a class this reader does not model.
type pyObject struct {
	Class pyGlobal
	Args  []any
	State any
}

type pyMark struct{}

// unpickler hooks: call handles REDUCE/NEWOBJ of a global, persistentLoad
// handles persistent ids. Either may be nil.
type unpickler struct {
	buf            []byte
	pos            int
	stack          []any
	metaStack      [][]any
	memo           map[int]any
	call           func(g pyGlobal, args pyTuple) (any, error)
	persistentLoad func(pid any) (any, error)
}

// maxPickleOps bounds the work one pickle may cause.
const maxPickleOps = 1 << 26

var errPickle = fmt.Errorf("pickle: %w", ErrFormat)

func (u *unpickler) fail(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", errPickle, u.pos, fmt.Sprintf(format, args...))
}

func (u *unpickler) read(n int) ([]byte, error) {
	if n < 0 || n > len(u.buf)-u.pos {
		return nil, u.fail("need %d bytes, %d left", n, len(u.buf)-u.pos)
	}
	b := u.buf[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) readLine() (string, error) {
	i := bytes.IndexByte(u.buf[u.pos:], '\n')
	if i < 0 {
		return "", u.fail("unterminated line")
	}
	s := string(u.buf[u.pos : u.pos+i])
	u.pos += i + 1
	return s, nil
}

func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 {
		return nil, u.fail("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 {
		return nil, u.fail("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

func (u *unpickler) popMark() ([]any, error) {
	if len(u.metaStack) == 0 {
		return nil, u.fail("no mark on the stack")
	}
	items := u.stack
	u.stack = u.metaStack[len(u.metaStack)-1]
	u.metaStack = u.metaStack[:len(u.metaStack)-1]
	return items, nil
}

// lenPrefixed reads an n-byte little-endian length then that many bytes.
func (u *unpickler) lenPrefixed(n int) ([]byte, error) {
	l, err := u.uint(n)
	if err != nil {
		return nil, err
	}
	if l > uint64(len(u.buf)-u.pos) {
		return nil, u.fail("length %d exceeds the %d bytes left", l, len(u.buf)-u.pos)
	}
	return u.read(int(l))
}

func (u *unpickler) memoGet(i int) error {
	v, ok := u.memo[i]
	if !ok {
		return u.fail("memo key %d not found", i)
	}
	u.push(v)
	return nil
}

func (u *unpickler) memoPut(i int) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	u.memo[i] = v
	return nil
}

func (u *unpickler) doCall(callee any, args pyTuple) (any, error) {
	g, ok := callee.(pyGlobal)
	if !ok {
		return nil, u.fail("call of non-global %T", callee)
	}
	if g.Module == "collections" && g.Name == "OrderedDict" || g.Module == "builtins" && g.Name == "dict" {
		return newPyDict(), nil
	}
	if u.call != nil {
		v, err := u.call(g, args)
		if err != nil {
			return nil, fmt.Errorf("pickle: call %s: %w", g, err)
		}
		if v != nil {
			return v, nil
		}
	}
	return &pyObject{Class: g, Args: args}, nil
}

func decodeLong(b []byte) any {
	if len(b) <= 8 {
		var v int64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | int64(b[i])
		}
		if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
			v -= 1 << (8 * uint(len(b)))
		}
		return v
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return v
}

// load runs the machine from u.pos to the STOP opcode.
func (u *unpickler) load() (any, error) {
	u.stack, u.metaStack = nil, nil
	if u.memo == nil {
		u.memo = map[int]any{}
	}
	for ops := 0; ops < maxPickleOps; ops++ {
		ob, err := u.read(1)
		if err != nil {
			return nil, err
		}
		op := ob[0]
		switch op {
		case 0x80: // PROTO
			p, err := u.read(1)
			if err != nil {
				return nil, err
			}
			if p[0] > 5 {
				return nil, u.fail("unsupported protocol %d", p[0])
			}
		case 0x95: // FRAME: a size hint only
			if _, err := u.read(8); err != nil {
				return nil, err
			}
		case '.': // STOP
			return u.pop()
		case '(': // MARK
			u.metaStack = append(u.metaStack, u.stack)
			u.stack = nil
		case '0': // POP
			if len(u.stack) == 0 {
				if _, err := u.popMark(); err != nil {
					return nil, err
				}
			} else {
				u.stack = u.stack[:len(u.stack)-1]
			}
		case '1': // POP_MARK
			if _, err := u.popMark(); err != nil {
				return nil, err
			}
		case '2': // DUP
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 'N':
			u.push(nil)
		case 0x88:
			u.push(true)
		case 0x89:
			u.push(false)
		case 'I', 'L': // INT, LONG (text)
			s, err := u.readLine()
			if err != nil {
				return nil, err
			}
			s = strings.TrimSuffix(s, "L")
			switch {
			case op == 'I' && s == "00":
				u.push(false)
			case op == 'I' && s == "01":
				u.push(true)
			default:
				v, ok := new(big.Int).SetString(s, 10)
				if !ok {
					return nil, u.fail("bad integer %q", s)
				}
				if v.IsInt64() {
					u.push(v.Int64())
				} else {
					u.push(v)
				}
			}
		case 'J': // BININT
			v, err := u.uint(4)
			if err != nil {
				return nil, err
			}
			u.push(int64(int32(uint32(v))))
		case 'K': // BININT1
			v, err := u.uint(1)
			if err != nil {
				return nil, err
			}
			u.push(int64(v))
		case 'M': // BININT2
			v, err := u.uint(2)
			if err != nil {
				return nil, err
			}
			u.push(int64(v))
		case 0x8a, 0x8b: // LONG1, LONG4
			n := 1
			if op == 0x8b {
				n = 4
			}
			b, err := u.lenPrefixed(n)
			if err != nil {
				return nil, err
			}
			u.push(decodeLong(b))
		case 'F': // FLOAT (text)
			s, err := u.readLine()
			if err != nil {
				return nil, err
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, u.fail("bad float %q", s)
			}
			u.push(v)
		case 'G': // BINFLOAT, big-endian
			b, err := u.read(8)
			if err != nil {
				return nil, err
			}
			u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
		case 'S': // STRING (quoted)
			s, err := u.readLine()
			if err != nil {
				return nil, err
			}
			if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
				return nil, u.fail("bad STRING %q", s)
			}
			u.push(s[1 : len(s)-1])
		case 'V', 'P': // UNICODE (raw), PERSID
			s, err := u.readLine()
			if err != nil {
				return nil, err
			}
			if op == 'V' {
				u.push(s)
				break
			}
			if err := u.persist(s); err != nil {
				return nil, err
			}
		case 'T', 'X', 0x8d, 'U', 0x8c: // BINSTRING, BINUNICODE, BINUNICODE8, SHORT_BINSTRING, SHORT_BINUNICODE
			n := map[byte]int{'T': 4, 'X': 4, 0x8d: 8, 'U': 1, 0x8c: 1}[op]
			b, err := u.lenPrefixed(n)
			if err != nil {
				return nil, err
			}
			u.push(string(b))
		case 'B', 'C', 0x8e, 0x96: // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
			n := map[byte]int{'B': 4, 'C': 1, 0x8e: 8, 0x96: 8}[op]
			b, err := u.lenPrefixed(n)
			if err != nil {
				return nil, err
			}
			u.push(append([]byte(nil), b...))
		case ')':
			u.push(pyTuple{})
		case 't': // TUPLE
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(pyTuple(append([]any{}, items...)))
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op - 0x84)
			if len(u.stack) < n {
				return nil, u.fail("stack underflow")
			}
			t := append(pyTuple{}, u.stack[len(u.stack)-n:]...)
			u.stack = u.stack[:len(u.stack)-n]
			u.push(t)
		case ']':
			u.push(&pyList{})
		case 'l': // LIST
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(&pyList{items: append([]any{}, items...)})
		case '}':
			u.push(newPyDict())
		case 'd': // DICT
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			d := newPyDict()
			if err := u.setItems(d, items); err != nil {
				return nil, err
			}
			u.push(d)
		case 0x8f: // EMPTY_SET: a list is good enough
			u.push(&pyList{})
		case 0x91: // FROZENSET
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(&pyList{items: append([]any{}, items...)})
		case 'a': // APPEND
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			if err := u.appendTo([]any{v}); err != nil {
				return nil, err
			}
		case 'e', 0x90: // APPENDS, ADDITEMS
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			if err := u.appendTo(items); err != nil {
				return nil, err
			}
		case 's': // SETITEM
			if len(u.stack) < 3 {
				return nil, u.fail("stack underflow")
			}
			k, v := u.stack[len(u.stack)-2], u.stack[len(u.stack)-1]
			u.stack = u.stack[:len(u.stack)-2]
			d, ok := u.stack[len(u.stack)-1].(*pyDict)
			if !ok {
				return nil, u.fail("SETITEM on %T", u.stack[len(u.stack)-1])
			}
			if err := d.set(k, v); err != nil {
				return nil, u.fail("%v", err)
			}
		case 'u': // SETITEMS
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			top, err := u.top()
			if err != nil {
				return nil, err
			}
			d, ok := top.(*pyDict)
			if !ok {
				return nil, u.fail("SETITEMS on %T", top)
			}
			if err := u.setItems(d, items); err != nil {
				return nil, err
			}
		case 'g', 'h', 'j': // GET, BINGET, LONG_BINGET
			var i int
			switch op {
			case 'g':
				s, err := u.readLine()
				if err != nil {
					return nil, err
				}
				n, err := strconv.Atoi(s)
				if err != nil {
					return nil, u.fail("bad GET %q", s)
				}
				i = n
			case 'h':
				v, err := u.uint(1)
				if err != nil {
					return nil, err
				}
				i = int(v)
			default:
				v, err := u.uint(4)
				if err != nil {
					return nil, err
				}
				i = int(v)
			}
			if err := u.memoGet(i); err != nil {
				return nil, err
			}
		case 'p', 'q', 'r': // PUT, BINPUT, LONG_BINPUT
			var i int
			switch op {
			case 'p':
				s, err := u.readLine()
				if err != nil {
					return nil, err
				}
				n, err := strconv.Atoi(s)
				if err != nil {
					return nil, u.fail("bad PUT %q", s)
				}
				i = n
			case 'q':
				v, err := u.uint(1)
				if err != nil {
					return nil, err
				}
				i = int(v)
			default:
				v, err := u.uint(4)
				if err != nil {
					return nil, err
				}
				i = int(v)
			}
			if err := u.memoPut(i); err != nil {
				return nil, err
			}
		case 0x94: // MEMOIZE
			if err := u.memoPut(len(u.memo)); err != nil {
				return nil, err
			}
		case 'c': // GLOBAL
			mod, err := u.readLine()
			if err != nil {
				return nil, err
			}
			name, err := u.readLine()
			if err != nil {
				return nil, err
			}
			u.push(pyGlobal{mod, name})
		case 0x93: // STACK_GLOBAL
			name, err := u.pop()
			if err != nil {
				return nil, err
			}
			mod, err := u.pop()
			if err != nil {
				return nil, err
			}
			ms, ok1 := mod.(string)
			ns, ok2 := name.(string)
			if !ok1 || !ok2 {
				return nil, u.fail("STACK_GLOBAL of %T, %T", mod, name)
			}
			u.push(pyGlobal{ms, ns})
		case 'R': // REDUCE
			args, err := u.pop()
			if err != nil {
				return nil, err
			}
			callee, err := u.pop()
			if err != nil {
				return nil, err
			}
			t, ok := args.(pyTuple)
			if !ok {
				return nil, u.fail("REDUCE args are %T, want tuple", args)
			}
			v, err := u.doCall(callee, t)
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 0x81, 0x92: // NEWOBJ, NEWOBJ_EX
			if op == 0x92 {
				if _, err := u.pop(); err != nil { // kwargs
					return nil, err
				}
			}
			args, err := u.pop()
			if err != nil {
				return nil, err
			}
			cls, err := u.pop()
			if err != nil {
				return nil, err
			}
			t, ok := args.(pyTuple)
			if !ok {
				return nil, u.fail("NEWOBJ args are %T, want tuple", args)
			}
			v, err := u.doCall(cls, t)
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 'o': // OBJ
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			if len(items) == 0 {
				return nil, u.fail("OBJ without class")
			}
			v, err := u.doCall(items[0], pyTuple(items[1:]))
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 'i': // INST
			mod, err := u.readLine()
			if err != nil {
				return nil, err
			}
			name, err := u.readLine()
			if err != nil {
				return nil, err
			}
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			v, err := u.doCall(pyGlobal{mod, name}, pyTuple(items))
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 'b': // BUILD
			state, err := u.pop()
			if err != nil {
				return nil, err
			}
			inst, err := u.top()
			if err != nil {
				return nil, err
			}
			switch o := inst.(type) {
			case *pyDict:
				o.attrs = state
			case *pyObject:
				o.State = state
			default:
				return nil, u.fail("BUILD on %T", inst)
			}
		case 'Q': // BINPERSID
			pid, err := u.pop()
			if err != nil {
				return nil, err
			}
			if err := u.persist(pid); err != nil {
				return nil, err
			}
		default:
			return nil, u.fail("unsupported opcode %#02x", op)
		}
	}
	return nil, u.fail("more than %d operations", maxPickleOps)
}

func (u *unpickler) persist(pid any) error {
	if u.persistentLoad == nil {
		return u.fail("persistent id without a loader")
	}
	v, err := u.persistentLoad(pid)
	if err != nil {
		return fmt.Errorf("pickle: persistent id: %w", err)
	}
	u.push(v)
	return nil
}

func (u *unpickler) setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return u.fail("odd number of dict items")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return u.fail("%v", err)
		}
	}
	return nil
}

func (u *unpickler) appendTo(items []any) error {
	top, err := u.top()
	if err != nil {
		return err
	}
	l, ok := top.(*pyList)
	if !ok {
		return u.fail("APPEND to %T", top)
	}
	l.items = append(l.items, items...)
	return nil
}

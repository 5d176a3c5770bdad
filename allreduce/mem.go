package allreduce

import (
	"errors"
	"fmt"
	"sync"
)

// memQueue is the depth of an in-memory link, in frames.
const memQueue = 8

// memEnd is one rank's inbound link plus the signal that the rank is gone.
type memEnd struct {
	in   chan frame
	down chan struct{}
	once sync.Once
	err  error
}

func (e *memEnd) wait() {}

func (e *memEnd) shutdown(err error) {
	e.once.Do(func() {
		e.err = err
		close(e.down)
	})
}

// NewMemGroup returns n Communicators (rank i at index i) of ring generation
// 1 connected in memory, for tests and simulations. Closing one behaves like
// a dead process: its neighbours' collectives fail.
func NewMemGroup(n int, opt Options) []Communicator {
	if n < 1 {
		panic(fmt.Sprintf("allreduce: NewMemGroup(%d): world size must be >= 1", n))
	}
	pool := &bufPool{}
	ends := make([]*memEnd, n)
	for i := range ends {
		ends[i] = &memEnd{in: make(chan frame, memQueue), down: make(chan struct{})}
	}
	comms := make([]Communicator, n)
	for i := range comms {
		me, right, left := ends[i], ends[mod(i+1, n)], ends[mod(i-1, n)]
		p := pipe{
			out:     right.in,
			in:      me.in,
			outDown: right.down,
			inDown:  left.down,
			outErr:  func() error { return peerGone(right.err) },
			inErr:   func() error { return peerGone(left.err) },
			pool:    pool,
		}
		if n == 1 {
			p.outDown, p.inDown = make(chan struct{}), make(chan struct{})
		}
		comms[i] = newRing(i, n, 1, nil, p, opt, me)
	}
	return comms
}

func peerGone(err error) error {
	if errors.Is(err, ErrClosed) {
		return errors.New("peer closed")
	}
	return fmt.Errorf("peer failed: %v", err)
}

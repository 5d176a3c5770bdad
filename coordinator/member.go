package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrMemberExists means another live registration holds the member id; it
// goes away when that worker's lease expires, so retrying after the TTL is
// right if the other holder is known to be dead.
var ErrMemberExists = errors.New("member id already registered")

// Membership is one worker's registration in a job: a key under a lease that
// is kept alive until Close or until etcd declares the lease lost.
type Membership struct {
	cli         *clientv3.Client
	job, id     string
	addr        string
	key         string
	lease       clientv3.LeaseID
	incarnation int64

	stopKeepAlive context.CancelFunc
	lost          chan struct{} // closed when the keepalive stream ends
	closed        chan struct{} // closed by Close; stops watchers
	wg            sync.WaitGroup
	closeOnce     sync.Once
	closeErr      error
}

// Register puts /ringtrain/<job>/members/<id> = {id, addr} under a new lease
// of ttl (rounded up to whole seconds, at least 1) and keeps the lease alive
// in the background. It fails with ErrMemberExists if the id is held by a
// live lease. ctx bounds the registration only, not the keepalive.
func Register(ctx context.Context, cli *clientv3.Client, job, id, addr string, ttl time.Duration) (*Membership, error) {
	if !ValidJobName(job) {
		return nil, fmt.Errorf("register member %q: invalid job name %q", id, job)
	}
	if !ValidMemberID(id) {
		return nil, fmt.Errorf("register member in job %s: invalid member id %q", job, id)
	}
	where := fmt.Sprintf("member %s of job %s at etcd %v", id, job, cli.Endpoints())
	ttlSec := int64(math.Ceil(ttl.Seconds()))
	if ttlSec < 1 {
		ttlSec = 1
	}
	grant, err := cli.Grant(ctx, ttlSec)
	if err != nil {
		return nil, fmt.Errorf("register %s: grant %ds lease: %w", where, ttlSec, err)
	}
	key := MemberKey(job, id)
	val, err := json.Marshal(Member{ID: id, Addr: addr})
	if err != nil {
		return nil, fmt.Errorf("register %s: encode: %w", where, err)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(grant.ID))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = ErrMemberExists
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = cli.Revoke(rctx, grant.ID)
		cancel()
		return nil, fmt.Errorf("register %s: put %s: %w", where, key, err)
	}

	kaCtx, stop := context.WithCancel(context.Background())
	ka, err := cli.KeepAlive(kaCtx, grant.ID)
	if err != nil {
		stop()
		return nil, fmt.Errorf("register %s: keepalive lease %x: %w", where, grant.ID, err)
	}
	m := &Membership{
		cli: cli, job: job, id: id, addr: addr, key: key,
		lease: grant.ID, incarnation: resp.Header.Revision,
		stopKeepAlive: stop,
		lost:          make(chan struct{}),
		closed:        make(chan struct{}),
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(m.lost)
		for range ka { // drain responses; the channel closes when the lease is gone
		}
	}()
	return m, nil
}

// Self is this registration as it appears in a Ring.
func (m *Membership) Self() Member {
	return Member{ID: m.id, Addr: m.addr, Incarnation: m.incarnation}
}

// Lease is the etcd lease the registration lives under.
func (m *Membership) Lease() clientv3.LeaseID { return m.lease }

// Lost is closed when the lease can no longer be kept alive (expired, revoked
// or Close called). A worker whose lease is lost is out of every future ring
// and must Register again, as a new incarnation.
func (m *Membership) Lost() <-chan struct{} { return m.lost }

// Registered reports whether the member key is still this registration's:
// present, created by it and under its lease. Lost does not fire for a key
// deleted while its lease lives (by hand, say): the coordinator then counts
// the worker gone although the worker holds its lease.
func (m *Membership) Registered(ctx context.Context) (bool, error) {
	resp, err := m.cli.Get(ctx, m.key)
	if err != nil {
		return false, fmt.Errorf("check member %s of job %s at etcd %v: %w", m.id, m.job, m.cli.Endpoints(), err)
	}
	if len(resp.Kvs) != 1 {
		return false, nil
	}
	kv := resp.Kvs[0]
	return kv.CreateRevision == m.incarnation && clientv3.LeaseID(kv.Lease) == m.lease, nil
}

// WatchRing streams ring generations of the member's job, as WatchRing does,
// until ctx ends or the Membership is closed.
func (m *Membership) WatchRing(ctx context.Context) <-chan Ring {
	ctx, cancel := context.WithCancel(ctx)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case <-ctx.Done():
		case <-m.closed:
			cancel()
		}
	}()
	return WatchRing(ctx, m.cli, m.job)
}

// Close revokes the lease, so the member disappears at once instead of after
// the TTL, and stops the keepalive. Safe to call twice.
func (m *Membership) Close() error {
	m.closeOnce.Do(func() {
		close(m.closed)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := m.cli.Revoke(ctx, m.lease)
		m.stopKeepAlive()
		m.wg.Wait()
		if err != nil {
			m.closeErr = fmt.Errorf("close member %s of job %s: revoke lease %x at etcd %v: %w", m.id, m.job, m.lease, m.cli.Endpoints(), err)
		}
	})
	return m.closeErr
}

// WatchRing streams the job's ring generations: first the current one (if a
// ring exists), then each new generation, in increasing Generation order and
// never the same generation twice. The channel is closed when ctx ends.
// Watch failures (compaction, leader loss) are retried with backoff, so a
// consumer only sees rings. Slow consumers delay, but never lose, the newest
// generation. Closing cli also ends the watch.
func WatchRing(ctx context.Context, cli *clientv3.Client, job string) <-chan Ring {
	out := make(chan Ring)
	key := RingKey(job)
	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(cli.Ctx(), cancel)
	go func() {
		defer close(out)
		defer stopOnClose()
		defer cancel()
		var last uint64
		send := func(data []byte) bool {
			r, err := decodeJSON[Ring]("ring", key, data)
			if err != nil || r.Generation <= last {
				return true
			}
			select {
			case out <- r:
				last = r.Generation
				return true
			case <-ctx.Done():
				return false
			}
		}
		bo := newBackoff(50*time.Millisecond, 2*time.Second)
		for ctx.Err() == nil {
			resp, err := cli.Get(ctx, key)
			if err != nil {
				if !bo.wait(ctx) {
					return
				}
				continue
			}
			if len(resp.Kvs) == 1 && !send(resp.Kvs[0].Value) {
				return
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				bo.reset()
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut && !send(ev.Kv.Value) {
						cancel()
						return
					}
				}
			}
			cancel()
			if !bo.wait(ctx) {
				return
			}
		}
	}()
	return out
}

// backoff is an exponential delay with a cap; not safe for concurrent use.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) reset() { b.cur = b.min }

// wait sleeps the current delay and doubles it; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.cur)
	defer t.Stop()
	b.cur = min(b.cur*2, b.max)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ReportFailure records that a worker cannot run a job's submission (see
// JobFailure); the leading coordinator then marks the job failed. The first
// report stands: workers that fail the same way after it add nothing.
func ReportFailure(ctx context.Context, cli *clientv3.Client, job string, f JobFailure) error {
	if f.Time.IsZero() {
		f.Time = time.Now()
	}
	key := FailureKey(job)
	_, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(mustJSON(f)))).
		Commit()
	if err != nil {
		return fmt.Errorf("report failure of job %s to etcd %v: %w", job, cli.Endpoints(), err)
	}
	return nil
}

package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// EventType names what happened. Step metrics go to the metrics subject,
// everything else to the events subject.
type EventType string

const (
	EventJobSubmitted      EventType = "job_submitted"
	EventJobStarted        EventType = "job_started"
	EventStepMetrics       EventType = "step_metrics"
	EventEpoch             EventType = "epoch"
	EventEvaluation        EventType = "evaluation"
	EventCheckpoint        EventType = "checkpoint"
	EventMembershipChanged EventType = "membership_changed"
	EventWaiting           EventType = "waiting"
	EventLeaderElected     EventType = "leader_elected"
	EventStopped           EventType = "stopped"
	EventFailed            EventType = "failed"
	EventFinished          EventType = "finished"
)

// Event is one observation of a job, published as JSON. Fields that do not
// apply to a Type are left zero.
type Event struct {
	Job        string             `json:"job"`
	Type       EventType          `json:"type"`
	Time       time.Time          `json:"time"`
	Generation uint64             `json:"generation,omitempty"`
	Step       int64              `json:"step,omitempty"`
	Epoch      int                `json:"epoch,omitempty"`
	Members    []string           `json:"members,omitempty"` // ring order
	Joined     []string           `json:"joined,omitempty"`
	Left       []string           `json:"left,omitempty"`
	Metrics    map[string]float64 `json:"metrics,omitempty"` // loss, acc, lr, img_per_s, ...
	Message    string             `json:"message,omitempty"`
	Source     string             `json:"source,omitempty"` // coordinator or worker id
}

// Subject is the NATS subject the event goes to.
func (e Event) Subject() string {
	if e.Type == EventStepMetrics {
		return MetricsSubject(e.Job)
	}
	return EventsSubject(e.Job)
}

// Publisher sends events to observers. Nothing may depend on delivery for
// correctness: callers log a failed Publish and carry on. Implementations
// are safe for concurrent use and do not block on slow subscribers.
type Publisher interface {
	Publish(ctx context.Context, e Event) error
}

// NopPublisher drops every event (no NATS configured).
type NopPublisher struct{}

func (NopPublisher) Publish(context.Context, Event) error { return nil }

// NATSPublisher publishes events as JSON on ringtrain.<job>.{events,metrics}.
type NATSPublisher struct {
	nc *nats.Conn
}

var (
	_ Publisher = NopPublisher{}
	_ Publisher = (*NATSPublisher)(nil)
)

// NewNATSPublisher publishes through nc; the caller keeps ownership of nc.
func NewNATSPublisher(nc *nats.Conn) *NATSPublisher { return &NATSPublisher{nc: nc} }

// Publish encodes e and hands it to the NATS client's buffer; it does not
// wait for the server (nats.go flushes in the background and buffers while
// reconnecting).
func (p *NATSPublisher) Publish(ctx context.Context, e Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("publish %s event of job %s: encode: %w", e.Type, e.Job, err)
	}
	if err := p.nc.Publish(e.Subject(), data); err != nil {
		return fmt.Errorf("publish %s event on %s via %s: %w", e.Type, e.Subject(), p.nc.ConnectedUrlRedacted(), err)
	}
	return nil
}

// ConnectNATS dials url, retrying with backoff until ctx ends, and keeps
// reconnecting forever afterwards. The error names the address tried.
func ConnectNATS(ctx context.Context, url, name string) (*nats.Conn, error) {
	bo := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.Timeout(2*time.Second))
		if err == nil {
			return nc, nil
		}
		if !bo.wait(ctx) {
			return nil, fmt.Errorf("connect to NATS at %s: %w (gave up: %v)", url, err, ctx.Err())
		}
	}
}

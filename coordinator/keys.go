package coordinator

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// KeyRoot prefixes every etcd key ringtrain writes. A job owns the subtree
// /ringtrain/<job>/:
//
//	spec          JobSpec (JSON), written once by Submit
//	status        JobStatus (JSON), written by the leading coordinator and Stop
//	members/<id>  Member (JSON), under the worker's lease
//	ring          Ring (JSON), one immutable generation, replaced whole
//	state         JobState (JSON), written by rank 0 after each completed step
//	failure       JobFailure (JSON), written by a worker that cannot run the job
//	leader/...    coordinator election (etcd concurrency.Election)
const KeyRoot = "/ringtrain/"

func jobPrefix(job string) string      { return KeyRoot + job + "/" }
func SpecKey(job string) string        { return jobPrefix(job) + "spec" }
func StatusKey(job string) string      { return jobPrefix(job) + "status" }
func MembersPrefix(job string) string  { return jobPrefix(job) + "members/" }
func MemberKey(job, id string) string  { return MembersPrefix(job) + id }
func RingKey(job string) string        { return jobPrefix(job) + "ring" }
func StateKey(job string) string       { return jobPrefix(job) + "state" }
func FailureKey(job string) string     { return jobPrefix(job) + "failure" }
func LeaderPrefix(job string) string   { return jobPrefix(job) + "leader" }
func EventsSubject(job string) string  { return "ringtrain." + job + ".events" }
func MetricsSubject(job string) string { return "ringtrain." + job + ".metrics" }

// jobFromSpecKey returns the job of a /ringtrain/<job>/spec key.
func jobFromSpecKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, KeyRoot)
	if !ok {
		return "", false
	}
	job, ok := strings.CutSuffix(rest, "/spec")
	if !ok || !ValidJobName(job) {
		return "", false
	}
	return job, true
}

var memberIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidMemberID reports whether id can name a worker (an etcd path element).
func ValidMemberID(id string) bool { return memberIDRE.MatchString(id) }

// Phase is where a job is in its life.
type Phase string

const (
	PhasePending  Phase = "pending"  // submitted, no ring formed yet
	PhaseWaiting  Phase = "waiting"  // fewer than world.min workers alive
	PhaseRunning  Phase = "running"  // a ring generation is in force
	PhaseStopping Phase = "stopping" // Stop was called; workers finish the step and exit
	PhaseStopped  Phase = "stopped"
	PhaseFinished Phase = "finished"
	PhaseFailed   Phase = "failed"
)

// Terminal reports whether the job will not run again.
func (p Phase) Terminal() bool {
	return p == PhaseStopped || p == PhaseFinished || p == PhaseFailed
}

// JobStatus is the coordinator's view of a job, kept at StatusKey.
type JobStatus struct {
	Job        string    `json:"job"`
	Phase      Phase     `json:"phase"`
	Message    string    `json:"message,omitempty"`
	Generation uint64    `json:"generation"`
	World      int       `json:"world"`
	Step       int64     `json:"step"`
	Epoch      int       `json:"epoch"`
	Leader     string    `json:"leader,omitempty"` // coordinator id that wrote it
	Updated    time.Time `json:"updated"`
}

// JobFailure is a worker's report that the job cannot run as submitted (a
// dataset that is not there, a checkpoint it must not resume, a net that
// does not build): the leading coordinator marks the job failed with it, so
// users see the cause in status instead of a job pending forever.
// Submission ties it to one submission; resubmitting deletes it.
type JobFailure struct {
	Submission string    `json:"submission,omitempty"`
	Member     string    `json:"member"`
	Message    string    `json:"message"`
	Time       time.Time `json:"time"`
}

// JobState is training progress, written by rank 0 after a completed step.
// Sampler is opaque here: the dataset sampler owns its encoding.
type JobState struct {
	Generation uint64          `json:"generation"`
	Step       int64           `json:"step"` // last completed global step
	Epoch      int             `json:"epoch"`
	Done       bool            `json:"done,omitempty"` // all epochs completed
	Sampler    json.RawMessage `json:"sampler,omitempty"`
	Updated    time.Time       `json:"updated"`
}

func decodeJSON[T any](what, key string, data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("decode %s at %s: %w", what, key, err)
	}
	return v, nil
}

// mustJSON encodes a value whose type cannot fail to encode (no channels,
// funcs or NaN floats by construction); a failure is a programmer bug.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("coordinator: encode %T: %v", v, err))
	}
	return b
}

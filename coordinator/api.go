package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// The gRPC API is hand-written (no protoc here): a grpc.ServiceDesc whose
// messages are these Go structs, sent as JSON by jsonCodec.

// ServiceName is the gRPC service; methods are /ringtrain.v1.Coordinator/<Method>.
const ServiceName = "ringtrain.v1.Coordinator"

var (
	ErrJobExists   = errors.New("job already exists")
	ErrJobNotFound = errors.New("job not found")
)

type SubmitRequest struct {
	Spec string `json:"spec"` // YAML or JSON job spec text
}

type SubmitResponse struct {
	Spec JobSpec `json:"spec"` // as stored: defaults filled in
}

type StatusRequest struct {
	Job string `json:"job"`
}

type StatusResponse struct {
	Spec    JobSpec   `json:"spec"`
	Status  JobStatus `json:"status"`
	Ring    Ring      `json:"ring"`
	State   *JobState `json:"state,omitempty"`
	Members []Member  `json:"members"` // live registrations, by id
	Leader  string    `json:"leader,omitempty"`
}

type StopRequest struct {
	Job    string `json:"job"`
	Reason string `json:"reason,omitempty"`
}

type StopResponse struct {
	Status JobStatus `json:"status"`
}

type ListRequest struct{}

type ListResponse struct {
	Jobs []JobStatus `json:"jobs"` // sorted by job name
}

// jsonCodec marshals API messages as JSON. Its name becomes the content
// subtype (application/grpc+json).
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return "json" }

// JSONCodec is the codec both ends of the API must use
// (grpc.ForceServerCodec / grpc.ForceCodec).
func JSONCodec() encoding.Codec { return jsonCodec{} }

// apiHandler is what the ServiceDesc dispatches to.
type apiHandler interface {
	Submit(context.Context, *SubmitRequest) (*SubmitResponse, error)
	Status(context.Context, *StatusRequest) (*StatusResponse, error)
	Stop(context.Context, *StopRequest) (*StopResponse, error)
	List(context.Context, *ListRequest) (*ListResponse, error)
}

var _ apiHandler = (*apiServer)(nil)

func unary[Req, Resp any](method string, call func(apiHandler, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	full := "/" + ServiceName + "/" + method
	return grpc.MethodDesc{
		MethodName: method,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(Req)
			if err := dec(in); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "%s: decode request: %v", full, err)
			}
			h := srv.(apiHandler)
			if icpt == nil {
				return call(h, ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: full}
			return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return call(h, ctx, req.(*Req))
			})
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*apiHandler)(nil),
	Methods: []grpc.MethodDesc{
		unary("Submit", apiHandler.Submit),
		unary("Status", apiHandler.Status),
		unary("Stop", apiHandler.Stop),
		unary("List", apiHandler.List),
	},
	Metadata: "coordinator/api.go",
}

// NewGRPCServer returns a gRPC server with the coordinator API registered
// and the JSON codec forced. The caller Serves and stops it.
func (c *Coordinator) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append([]grpc.ServerOption{grpc.ForceServerCodec(JSONCodec())}, opts...)...)
	s.RegisterService(&serviceDesc, &apiServer{c: c})
	return s
}

type apiServer struct{ c *Coordinator }

func (a *apiServer) count(method string, err error) error {
	a.c.m.apiRequests.WithLabelValues(method, status.Code(toStatus(err)).String()).Inc()
	return toStatus(err)
}

func (a *apiServer) Submit(ctx context.Context, in *SubmitRequest) (*SubmitResponse, error) {
	spec, err := a.c.SubmitJob(ctx, []byte(in.Spec))
	if err != nil {
		return nil, a.count("Submit", err)
	}
	return &SubmitResponse{Spec: spec}, a.count("Submit", nil)
}

func (a *apiServer) Status(ctx context.Context, in *StatusRequest) (*StatusResponse, error) {
	st, err := a.c.JobStatus(ctx, in.Job)
	return st, a.count("Status", err)
}

func (a *apiServer) Stop(ctx context.Context, in *StopRequest) (*StopResponse, error) {
	st, err := a.c.StopJob(ctx, in.Job, in.Reason)
	if err != nil {
		return nil, a.count("Stop", err)
	}
	return &StopResponse{Status: st}, a.count("Stop", nil)
}

func (a *apiServer) List(ctx context.Context, _ *ListRequest) (*ListResponse, error) {
	jobs, err := a.c.ListJobs(ctx)
	if err != nil {
		return nil, a.count("List", err)
	}
	return &ListResponse{Jobs: jobs}, a.count("List", nil)
}

// toStatus maps domain errors to gRPC codes, keeping the message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrInvalidSpec):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrJobExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrJobNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Unavailable, err.Error())
	}
}

// SubmitJob parses and validates a spec and stores it with status pending.
// The leading coordinator picks it up from etcd. A name held by a job that
// has not ended is ErrJobExists; a job that ended (stopped, finished, failed)
// is replaced, and its ring generations keep counting up from the old run's.
// Every submission gets a new spec.Submission.
func (c *Coordinator) SubmitJob(ctx context.Context, specText []byte) (JobSpec, error) {
	spec, err := ParseJobSpec(specText)
	if err != nil {
		return spec, err
	}
	job := spec.Name
	spec.Submission = newSubmissionID(c.cfg.Now())
	st := JobStatus{Job: job, Phase: PhasePending, Message: "submitted", Updated: c.cfg.Now()}
	puts := []clientv3.Op{
		clientv3.OpPut(SpecKey(job), string(mustJSON(spec))),
		clientv3.OpPut(StatusKey(job), string(mustJSON(st))),
		clientv3.OpDelete(FailureKey(job)), // an earlier run's
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(SpecKey(job)), "=", 0)).
		Then(puts...).
		Else(clientv3.OpGet(StatusKey(job)), clientv3.OpGet(RingKey(job))).
		Commit()
	if err != nil {
		return spec, fmt.Errorf("submit job %s to etcd %v: %w", job, c.cli.Endpoints(), err)
	}
	if !resp.Succeeded {
		if err := c.resubmit(ctx, spec, puts, resp); err != nil {
			return spec, err
		}
	}
	c.log.Info("job submitted", "job", job, "net", spec.Net, "world_min", spec.World.Min)
	c.publish(ctx, Event{Job: job, Type: EventJobSubmitted, Message: spec.Net})
	return spec, nil
}

// newSubmissionID names one submission: the time, for people, and 48
// random bits, so that ids stay distinct across coordinators, clocks that
// step back and etcd clusters rebuilt over the same checkpoint store.
func newSubmissionID(now time.Time) string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// resubmit replaces an ended job, given the Else reads of SubmitJob's txn.
func (c *Coordinator) resubmit(ctx context.Context, spec JobSpec, puts []clientv3.Op, prev *clientv3.TxnResponse) error {
	job := spec.Name
	statusKVs := prev.Responses[0].GetResponseRange().Kvs
	if len(statusKVs) == 0 {
		return fmt.Errorf("submit job %s: %w", job, ErrJobExists)
	}
	old, err := decodeJSON[JobStatus]("job status", StatusKey(job), statusKVs[0].Value)
	if err != nil || !old.Phase.Terminal() {
		return fmt.Errorf("submit job %s (%s): %w", job, old.Phase, ErrJobExists)
	}
	var gen uint64
	if ringKVs := prev.Responses[1].GetResponseRange().Kvs; len(ringKVs) > 0 {
		if r, err := decodeJSON[Ring]("ring", RingKey(job), ringKVs[0].Value); err == nil {
			gen = r.Generation
		}
	}
	// An empty ring at the old generation: the new run's first ring is gen+1,
	// so no generation number is ever reused for a job name.
	ops := append(puts,
		clientv3.OpPut(RingKey(job), string(mustJSON(Ring{Job: job, Generation: gen, Formed: c.cfg.Now()}))),
		clientv3.OpDelete(StateKey(job)))
	tr, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(StatusKey(job)), "=", statusKVs[0].ModRevision)).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("resubmit job %s to etcd %v: %w", job, c.cli.Endpoints(), err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("submit job %s: status changed meanwhile: %w", job, ErrJobExists)
	}
	return nil
}

// JobStatus reads everything known about a job.
func (c *Coordinator) JobStatus(ctx context.Context, job string) (*StatusResponse, error) {
	if !ValidJobName(job) {
		return nil, fmt.Errorf("status of job %q: %w", job, ErrJobNotFound)
	}
	v, err := c.readJob(ctx, job)
	if err != nil {
		return nil, err
	}
	if v.spec == nil {
		return nil, fmt.Errorf("status of job %s: %w", job, ErrJobNotFound)
	}
	out := &StatusResponse{Spec: *v.spec, Status: v.status, Ring: v.ring, State: v.state, Members: v.members}
	if lr, err := c.cli.Get(ctx, LeaderPrefix(job)+"/", clientv3.WithFirstCreate()...); err == nil && len(lr.Kvs) > 0 {
		out.Leader = string(lr.Kvs[0].Value)
	}
	return out, nil
}

// StopJob marks a job stopping: workers watching its status finish the step
// and leave; the leader marks it stopped once no member is registered. A job
// that already ended is returned unchanged.
func (c *Coordinator) StopJob(ctx context.Context, job, reason string) (JobStatus, error) {
	if !ValidJobName(job) {
		return JobStatus{}, fmt.Errorf("stop job %q: %w", job, ErrJobNotFound)
	}
	if reason == "" {
		reason = "stop requested"
	}
	for {
		resp, err := c.cli.Get(ctx, StatusKey(job))
		if err != nil {
			return JobStatus{}, fmt.Errorf("stop job %s: read status from etcd %v: %w", job, c.cli.Endpoints(), err)
		}
		if len(resp.Kvs) == 0 {
			return JobStatus{}, fmt.Errorf("stop job %s: %w", job, ErrJobNotFound)
		}
		st, err := decodeJSON[JobStatus]("job status", StatusKey(job), resp.Kvs[0].Value)
		if err != nil {
			return st, err
		}
		if st.Phase.Terminal() || st.Phase == PhaseStopping {
			return st, nil
		}
		st.Phase, st.Message, st.Updated = PhaseStopping, reason, c.cfg.Now()
		tr, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(StatusKey(job)), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(StatusKey(job), string(mustJSON(st)))).
			Commit()
		if err != nil {
			return st, fmt.Errorf("stop job %s: write status to etcd %v: %w", job, c.cli.Endpoints(), err)
		}
		if tr.Succeeded {
			c.log.Info("job stopping", "job", job, "reason", reason)
			return st, nil
		}
		// The leader wrote the status meanwhile; read it again.
	}
}

// ListJobs returns the status of every submitted job, sorted by name.
func (c *Coordinator) ListJobs(ctx context.Context) ([]JobStatus, error) {
	resp, err := c.cli.Get(ctx, KeyRoot, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list jobs in etcd %v: %w", c.cli.Endpoints(), err)
	}
	var ops []clientv3.Op
	for _, kv := range resp.Kvs {
		if job, ok := jobFromSpecKey(string(kv.Key)); ok {
			ops = append(ops, clientv3.OpGet(StatusKey(job)))
		}
	}
	jobs := []JobStatus{}
	// Read statuses in batches at one revision each; etcd caps ops per txn.
	for len(ops) > 0 {
		n := min(len(ops), 64)
		tr, err := c.cli.Txn(ctx).Then(ops[:n]...).Commit()
		if err != nil {
			return nil, fmt.Errorf("list jobs in etcd %v: read statuses: %w", c.cli.Endpoints(), err)
		}
		for _, r := range tr.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				st, err := decodeJSON[JobStatus]("job status", string(kv.Key), kv.Value)
				if err != nil {
					return nil, err
				}
				jobs = append(jobs, st)
			}
		}
		ops = ops[n:]
	}
	slices.SortFunc(jobs, func(a, b JobStatus) int { return strings.Compare(a.Job, b.Job) })
	return jobs, nil
}

// Client calls a coordinator's gRPC API.
type Client struct {
	cc     *grpc.ClientConn
	target string
}

// Dial creates a client for the coordinator at target (host:port). It does
// not connect until the first call; a call to an unreachable coordinator
// fails with codes.Unavailable naming the target.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(JSONCodec())),
	}, opts...)
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial coordinator %s: %w", target, err)
	}
	return &Client{cc: cc, target: target}, nil
}

// Close releases the connection.
func (c *Client) Close() error { return c.cc.Close() }

func (c *Client) invoke(ctx context.Context, method string, in, out any) error {
	if err := c.cc.Invoke(ctx, "/"+ServiceName+"/"+method, in, out); err != nil {
		return fmt.Errorf("%s at coordinator %s: %w", method, c.target, err)
	}
	return nil
}

// Submit sends a YAML or JSON spec; the response holds it with defaults.
func (c *Client) Submit(ctx context.Context, specText []byte) (*SubmitResponse, error) {
	out := new(SubmitResponse)
	return out, c.invoke(ctx, "Submit", &SubmitRequest{Spec: string(specText)}, out)
}

func (c *Client) Status(ctx context.Context, job string) (*StatusResponse, error) {
	out := new(StatusResponse)
	return out, c.invoke(ctx, "Status", &StatusRequest{Job: job}, out)
}

func (c *Client) Stop(ctx context.Context, job, reason string) (*StopResponse, error) {
	out := new(StopResponse)
	return out, c.invoke(ctx, "Stop", &StopRequest{Job: job, Reason: reason}, out)
}

func (c *Client) List(ctx context.Context) (*ListResponse, error) {
	out := new(ListResponse)
	return out, c.invoke(ctx, "List", &ListRequest{}, out)
}

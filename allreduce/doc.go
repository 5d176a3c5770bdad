// Package allreduce implements bandwidth-optimal collectives over a ring of
// workers: chunked ring all-reduce (reduce-scatter then all-gather, pipelined
// in sub-chunks, Gloo's schedule), broadcast, barrier and a small all-gather,
// plus DDP-style gradient buckets (Reducer).
//
// The shape is a pure core with thin I/O shells:
//
//   - schedule.go: which chunk each rank sends and receives at each step
//     (pure functions, table tests);
//   - frame.go, fp16.go: the wire frame and the fp16 wire encoding (pure,
//     fuzzed);
//   - ring.go: the collective algorithms, written once against a pair of
//     frame channels (to the right neighbour, from the left one);
//   - mem.go, grpc.go, tcp.go: transports that move frames between ranks in
//     memory (NewMemGroup), over one long-lived gRPC stream per ring edge
//     (DialRing), or over one plain TCP connection per edge (DialRingTCP,
//     same frames, no HTTP/2: about 1.3-1.8x gRPC's bandwidth here);
//   - reducer.go: DDP-style gradient buckets (Reducer) with compression
//     hooks (FP16Hook).
//
// The package works on plain []float32 and never imports the engine.
//
// Failure model: a ring generation is immutable. Any failure during a
// collective (a dead or stalled peer, a frame from another generation, a
// cancelled context) breaks the Communicator; every later call returns an
// error wrapping ErrBroken. The caller re-forms the ring with a new
// generation and retries the step. Errors name the peer and the generation
// (see *PeerError).
package allreduce

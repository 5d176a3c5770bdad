package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/ringtrain/ringtrain/allreduce/arbench"
)

// benchAllreduce is "ringtrain bench allreduce [--world 4] [--size 64MiB]
// [--transport grpc|mem] [--iters N] [--fp16] [--raw-tcp=false] [--json]".
// Every flag can also come from RINGTRAIN_<FLAG> (arbench.EnvDefaults). With
// grpc it re-executes this binary as "ringtrain bench allreduce-rank" once
// per rank.
func benchAllreduce(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench allreduce: finding this binary: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return arbench.Main(ctx, args, []string{exe, "bench", "allreduce-rank"}, os.Stdout, os.Stderr)
}

// benchAllreduceRank is the hidden "ringtrain bench allreduce-rank": one rank
// process started by benchAllreduce (it talks to its parent on stdin/stdout).
func benchAllreduceRank(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return arbench.RankMain(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}

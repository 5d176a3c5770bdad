package main

import (
	"fmt"
	"os"
)

// runBench dispatches `ringtrain bench <what>`.
func runBench(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("bench: want one of: gemm, train, allreduce, ddp")
	}
	switch args[0] {
	case "train":
		return benchTrain(args[1:])
	case "gemm":
		return benchGemm(args[1:])
	case "allreduce":
		return benchAllreduce(args[1:])
	case "allreduce-rank": // a child process of bench allreduce
		return benchAllreduceRank(args[1:])
	case "ddp":
		return benchDDP(args[1:])
	case "ddp-rank": // a child process of bench ddp
		return benchDDPRank(args[1:])
	}
	fmt.Fprintf(os.Stderr, "bench %s: not available in this build\n", args[0])
	return fmt.Errorf("bench: unknown benchmark %q", args[0])
}

// Command scalingtable prints the scaling model's predictions for
// ResNet-50 (and Horovod's ResNet-101 setting) as markdown tables:
//
//	go run ./internal/scaling/cmd/scalingtable [--cpu-img-s 3.1] [--gpu-img-s 1200] ...
//
// The defaults are the calibration figures written in BENCHMARKS.scaling.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ringtrain/ringtrain/internal/scaling"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "scalingtable:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("scalingtable", flag.ContinueOnError)
	cpuImgS := fs.Float64("cpu-img-s", 6.0, "ResNet-50 224 training img/s of one CPU worker (this machine, 2 cores)")
	cpuBatch := fs.Int("cpu-batch", 32, "per-worker batch of the CPU scenario")
	gpuImgS := fs.Float64("gpu-img-s", 1200, "ResNet-50 224 training img/s of one V100-class GPU")
	gpuBatch := fs.Int("gpu-batch", 64, "per-worker batch of the GPU scenarios")
	r101ImgS := fs.Float64("r101-img-s", 140, "ResNet-101 training img/s of one P100 (Horovod's setting)")
	latUS := fs.Float64("latency-us", 25, "per-message latency of a ring step, microseconds")
	loopGiBs := fs.Float64("loopback-gib-s", 0, "also a link of this many GiB/s (e.g. the loopback busbw measured here); 0 = none")
	worldsS := fs.String("worlds", "8,16,32,64,512", "world sizes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var worlds []int
	for _, s := range strings.Split(*worldsS, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--worlds: %q is not a world size", s)
		}
		worlds = append(worlds, n)
	}
	const (
		r50Params  = 25.557e6 // torchvision resnet50
		r101Params = 44.549e6 // torchvision resnet101
		bwd        = 2.0 / 3  // backward ≈ 2× forward
	)
	lat := *latUS * 1e-6
	cpu := float64(*cpuBatch) / *cpuImgS
	gpu := float64(*gpuBatch) / *gpuImgS
	scs := []scaling.Scenario{
		{Name: fmt.Sprintf("ResNet-50, CPU worker like this machine, batch %d/worker, fp32, 25 MB buckets overlapped", *cpuBatch),
			Source:   fmt.Sprintf("%.1f img/s", *cpuImgS),
			Workload: scaling.Workload{ComputeSec: cpu, BackwardFrac: bwd, Overlap: 1, GradBytes: 4 * r50Params, Buckets: 4}},
		{Name: fmt.Sprintf("ResNet-50, V100-class GPU, batch %d/worker, fp32, no overlap", *gpuBatch),
			Source:   fmt.Sprintf("%.0f img/s", *gpuImgS),
			Workload: scaling.Workload{ComputeSec: gpu, BackwardFrac: bwd, Overlap: 0, GradBytes: 4 * r50Params, Buckets: 1}},
		{Name: fmt.Sprintf("ResNet-50, V100-class GPU, batch %d/worker, fp32, 25 MB buckets overlapped", *gpuBatch),
			Source:   fmt.Sprintf("%.0f img/s", *gpuImgS),
			Workload: scaling.Workload{ComputeSec: gpu, BackwardFrac: bwd, Overlap: 1, GradBytes: 4 * r50Params, Buckets: 4}},
		{Name: fmt.Sprintf("ResNet-50, V100-class GPU, batch %d/worker, fp16 wire, 25 MB buckets overlapped", *gpuBatch),
			Source:   fmt.Sprintf("%.0f img/s", *gpuImgS),
			Workload: scaling.Workload{ComputeSec: gpu, BackwardFrac: bwd, Overlap: 1, GradBytes: 2 * r50Params, Buckets: 2}},
		{Name: "ResNet-101, P100 (Horovod 2018 setting), batch 64/worker, fp32, 64 MB fusion buffers overlapped",
			Source:   fmt.Sprintf("%.0f img/s, approximate", *r101ImgS),
			Workload: scaling.Workload{ComputeSec: 64 / *r101ImgS, BackwardFrac: bwd, Overlap: 1, GradBytes: 4 * r101Params, Buckets: 3}},
	}
	links := []scaling.NamedLink{
		{Name: "10 Gbit/s", Link: scaling.Gbit(10, lat)},
		{Name: "25 Gbit/s", Link: scaling.Gbit(25, lat)},
		{Name: "100 Gbit/s", Link: scaling.Gbit(100, lat)},
	}
	if *loopGiBs > 0 {
		links = append(links, scaling.NamedLink{Name: fmt.Sprintf("%.2f GiB/s (loopback busbw here)", *loopGiBs),
			Link: scaling.Link{BytesPerSec: *loopGiBs * (1 << 30), LatencySec: lat}})
	}
	fmt.Printf("Cells: weak-scaling efficiency (exposed communication per step). Ring latency %.0f µs per message.\n\n", *latUS)
	return scaling.WriteMarkdown(os.Stdout, scs, links, worlds)
}

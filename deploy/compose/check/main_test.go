package main

import (
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/worker"
)

func rec(step, epoch int, w string, idx ...int32) worker.SampleRecord {
	return worker.SampleRecord{Step: step, Epoch: epoch, Worker: w, Idx: idx}
}

func TestCheckAccounting(t *testing.T) {
	tests := []struct {
		name    string
		recs    []worker.SampleRecord
		n       int
		epochs  int
		wantErr string
	}{
		{"exact", []worker.SampleRecord{rec(0, 0, "a", 0, 1), rec(1, 0, "a", 2, 3), rec(2, 1, "a", 3, 1), rec(3, 1, "a", 0, 2)}, 4, 2, ""},
		{"duplicates agree", []worker.SampleRecord{rec(0, 0, "a", 0, 1), rec(0, 0, "b", 0, 1), rec(1, 0, "b", 2, 3)}, 4, 1, ""},
		{"duplicates differ", []worker.SampleRecord{rec(0, 0, "a", 0, 1), rec(0, 0, "b", 1, 0), rec(1, 0, "b", 2, 3)}, 4, 1, "different batches"},
		{"duplicate epoch differs", []worker.SampleRecord{rec(0, 0, "a", 0, 1), rec(0, 1, "b", 0, 1)}, 2, 2, "different batches"},
		{"missing sample", []worker.SampleRecord{rec(0, 0, "a", 0, 1), rec(1, 0, "a", 2)}, 4, 1, "sample 3 trained 0 times"},
		{"twice", []worker.SampleRecord{rec(0, 0, "a", 0, 1), rec(1, 0, "a", 1, 2)}, 3, 1, "sample 1 trained 2 times"},
		{"epoch out of range", []worker.SampleRecord{rec(0, 2, "a", 0)}, 1, 2, "epoch 2 of a 2-epoch job"},
		{"index out of range", []worker.SampleRecord{rec(0, 0, "a", 5)}, 1, 1, "outside"},
		{"missing epoch", []worker.SampleRecord{rec(0, 0, "a", 0, 1)}, 2, 2, "epoch 1: sample 0 trained 0 times"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkAccounting(tt.recs, tt.n, tt.epochs)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadSamples(t *testing.T) {
	good := `{"step":0,"epoch":0,"worker":"a","time":"2026-01-01T00:00:00Z","idx":[1,2]}` + "\n"
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{"one", good, 1, false},
		{"torn last line dropped", good + good + `{"step":2,"ep`, 2, false},
		{"bad line in the middle", good + "garbage\n" + good, 0, true},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		got, err := readSamples(strings.NewReader(tt.in))
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("%s: %d records, err %v; want %d, error %v", tt.name, len(got), err, tt.want, tt.wantErr)
		}
	}
}

func TestCond(t *testing.T) {
	v := jobView{Generation: 3, Step: 500, Leader: "coordinator-b", Ring: []string{"a-1", "b-1"}, Members: []string{"a-1", "b-1", "c-1"}}
	tests := []struct {
		in      string
		holds   bool
		wantErr bool
	}{
		{"step>=500", true, false},
		{"step>=501", false, false},
		{"step>=0", true, false},
		{"done", false, false},
		{"gen>=3", true, false},
		{"gen>=4", false, false},
		{"gen>=", false, true},
		{"leader=coordinator-b", true, false},
		{"leader=coordinator-a", false, false},
		{"in-ring=b-1", true, false},
		{"in-ring=c-1", false, false},
		{"member-gone=c-1", false, false},
		{"member-gone=d-1", true, false},
		{"step>=-1", false, true},
		{"step>=x", false, true},
		{"leader=", false, true},
		{"ring=a", false, true},
		{"", false, true},
	}
	for _, tt := range tests {
		c, err := parseCond(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseCond(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && c.holds(v) != tt.holds {
			t.Errorf("%q holds = %v, want %v", tt.in, !tt.holds, tt.holds)
		}
	}
	if c, _ := parseCond("done"); !c.holds(jobView{Done: true}) {
		t.Error("done does not hold for a done job")
	}
}

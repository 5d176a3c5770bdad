package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestEtcdPutGet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := StartEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("connect %s: %v", srv.ClientURL(), err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/ringtrain/test/k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "/ringtrain/test/k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("get = %v, want v1", resp.Kvs)
	}
}

func TestTwoEtcdsDoNotCollide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := StartEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := StartEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.ClientURL() == b.ClientURL() {
		t.Fatalf("both servers on %s", a.ClientURL())
	}
}

func TestEtcdCloseTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := StartEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	srv.Close()
}

func TestNATSPubSub(t *testing.T) {
	srv, err := StartNATS()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect %s: %v", srv.ClientURL(), err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("ringtrain.test.events")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ringtrain.test.events", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("next msg: %v", err)
	}
	if string(msg.Data) != "hello" {
		t.Fatalf("got %q, want hello", msg.Data)
	}
	srv.Close()
}

package caddymodule

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apiusers/caddy-api-users/policy"
)

func newTestAuditSinkTo(out zapcore.WriteSyncer) *auditSink {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), out, zap.InfoLevel)
	return newAuditSink(zap.New(core).Named("http.handlers.api_users.audit"), nil, nil)
}

func newBenchAuditQueue(b *testing.B, cfg AuditConfig) *auditQueue {
	b.Helper()
	if err := cfg.check(); err != nil {
		b.Fatal(err)
	}
	return newAuditQueue(cfg, prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"}), zap.NewNop())
}

// BenchmarkLayer_AuditQueue is what the audit costs in batch mode:
// copying a record into the queue, which is all a request pays
// ("enqueue"), and, measured apart, what the writer then spends on each
// record, encoding it as JSON and handing it on ("writer", per record, in
// batches of 1024). Every record must reach the sink, none dropped.
func BenchmarkLayer_AuditQueue(b *testing.B) {
	rec := layerAuditRecord(b)
	b.Run("enqueue", func(b *testing.B) {
		// The writer runs between rounds of 1024 records, off the clock,
		// so the figure is the request's own cost, not the writer's pace.
		out := &countingSink{}
		sink := newTestAuditSinkTo(out)
		q := newBenchAuditQueue(b, AuditConfig{MaxPending: 1 << 20})
		var fields [auditFieldCount]zap.Field
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			q.add(sink, rec, policy.Allowed)
			n++
			if n%1024 == 0 {
				b.StopTimer()
				q.writeBatch(&fields)
				b.StartTimer()
			}
		}
		q.writeBatch(&fields)
		if out.n != n || q.droppedN.Load() != 0 {
			b.Fatalf("%d records written, %d dropped, for %d decisions", out.n, q.droppedN.Load(), n)
		}
	})
	b.Run("writer", func(b *testing.B) {
		out := &countingSink{}
		sink := newTestAuditSinkTo(out)
		q := newBenchAuditQueue(b, AuditConfig{MaxPending: 1 << 20})
		var fields [auditFieldCount]zap.Field
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			q.pending = append(q.pending, queuedRecord{sink: sink, rec: *rec, reason: policy.Allowed})
			q.inMemory++
			if len(q.pending) == 1024 {
				q.writeBatch(&fields)
			}
			n++
		}
		q.writeBatch(&fields)
		if out.n != n {
			b.Fatalf("%d records written for %d", out.n, n)
		}
	})
}

package caddymodule

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apiusers/caddy-api-users/policy"
)

// The audit queue takes gateway decision records off the request path. A
// request copies its record into a bounded queue, which costs a lock and a
// copy, and goes on; one writer goroutine takes the whole queue at a time
// (as soon as auditChunk records wait, and at least every MaxDelay),
// encodes the batch through the audit logger (so records keep their shape
// and Caddy's `log { include }` still routes them), and then flushes the
// buffered audit writers (api_users_audit, auditwriter.go) once, so a batch
// of records costs one write(2) instead of one per record.
//
// What a crash can lose is bounded twice: by count, since at most
// MaxPending records are held in memory (queued or being written), and by
// time, since the writer takes the queue at least every MaxDelay. A
// graceful stop or a config reload loses nothing: the app's Stop and
// Cleanup drain the queue, and a record that arrives after that (a request
// still finishing during the HTTP server's graceful shutdown) is written
// at once, on the request's goroutine. A full queue holds a request for
// at most auditFullWait (10ms); a record that still finds no room is
// dropped, counted in caddy_api_users_audit_dropped_total and reported in
// an error line of the app's log, never silently.
//
// In sync mode every request waits until its record has been written and
// synced to disk (fsync, where the writer supports it) before it is
// answered or forwarded: concurrent requests share one write and one sync
// (group commit), so the cost is mostly latency.
type auditQueue struct {
	mu       sync.Mutex
	pending  []queuedRecord // waiting for the writer
	spare    []queuedRecord // the writer's previous batch, reused
	inMemory int            // pending plus the batch being written
	closed   bool
	next     chan struct{} // closed once the records now pending are written
	writing  chan struct{} // closed once the batch being written is written; nil when idle
	space    chan struct{} // closed whenever the writer frees room

	max    int
	wakeAt int // pending records that wake the writer before MaxDelay
	delay  time.Duration
	sync   bool

	kick chan struct{} // wakes the writer early
	stop chan struct{} // closed by close
	done chan struct{} // closed when the writer has exited

	dropped     prometheus.Counter
	droppedN    atomic.Uint64 // dropped so far
	reportedN   atomic.Uint64 // dropped records already named in an error line
	lastReport  atomic.Int64  // unix nanoseconds of the last error line
	logger      *zap.Logger
	writeErrors atomic.Uint64
}

// queuedRecord is a gateway decision waiting for the writer: the record as
// the gateway built it (public IDs only, never a credential value), its
// reason, and the logger its handler writes to.
type queuedRecord struct {
	sink   *auditSink
	rec    auditRecord
	reason policy.Reason
}

// auditSink is the audit logger of one gateway handler, with what the
// writer needs to stamp a record with its decision time, and the metrics
// and usage counter its decisions are counted in.
type auditSink struct {
	log     *zap.Logger
	core    zapcore.Core
	name    string
	metrics *metrics
	usage   *usageCounter // nil: decisions are not counted as usage
}

func newAuditSink(log *zap.Logger, m *metrics, usage *usageCounter) *auditSink {
	return &auditSink{log: log, core: log.Core(), name: log.Name(), metrics: m, usage: usage}
}

// count counts a decision in the metrics and, for an authenticated user,
// in its usage. The queue's writer counts the records it writes: one
// goroutine, in bulk, so requests do not contend for the counters' memory
// (a record dropped for want of room, or written on its request's
// goroutine, is counted there). The metrics and usage therefore trail the
// decisions by what is queued, at most MaxDelay (the usage flush and a
// graceful stop wait for the queue).
func (s *auditSink) count(rec *auditRecord, reason policy.Reason) {
	outcome, endpoint := int(reason), -1
	if rec.passThrough {
		outcome = passThroughOutcome
	}
	if rec.endpoint != nil {
		endpoint = rec.endpoint.Index()
	}
	if s.metrics != nil {
		s.metrics.decided(endpoint, outcome, rec.took)
		rec.cacheHits.count(&s.metrics.cache)
	}
	if s.usage != nil && rec.principal != nil && !rec.passThrough {
		name := ""
		if rec.endpoint != nil {
			name = rec.endpoint.Name
		}
		s.usage.add(rec.principal.User.ID, name, reason, rec.start)
	}
}

// auditFullWait is the longest a request waits for room in a full queue
// before its record is dropped (and counted).
const auditFullWait = 10 * time.Millisecond

// Audit modes.
const (
	AuditModeBatch = "batch"
	AuditModeSync  = "sync"
)

// Defaults of AuditConfig.
const (
	defaultAuditMaxPending = 4096
	defaultAuditMaxDelay   = 200 * time.Millisecond
)

// AuditConfig says how gateway decision records reach the audit log.
// Management records are always written before the change is
// acknowledged.
type AuditConfig struct {
	// Mode is "batch" (the default): a request's record is queued and
	// written by a background writer within MaxDelay, in batches; a
	// crash (SIGKILL, power loss) can lose the records of at most the
	// last MaxDelay, and at most MaxPending of them. Or "sync": a request
	// waits until its record is written and synced to disk (fsync where
	// the log writer supports it: api_users_audit and Caddy's file
	// writer) before it is answered or forwarded; nothing acknowledged is
	// lost, at the cost of latency.
	Mode string `json:"mode,omitempty"`

	// MaxPending bounds the records held in memory, queued or being
	// written. A request that finds the queue full waits at most 10ms for
	// room; then its record is dropped, counted in
	// caddy_api_users_audit_dropped_total and reported in the log.
	// Default: 4096.
	MaxPending int `json:"max_pending,omitempty"`

	// MaxDelay bounds how long a record waits in memory before the
	// writer takes it. Default: 200ms.
	MaxDelay caddy.Duration `json:"max_delay,omitempty"`
}

// check validates the config and fills in the defaults.
func (c *AuditConfig) check() error {
	switch c.Mode {
	case "":
		c.Mode = AuditModeBatch
	case AuditModeBatch, AuditModeSync:
	default:
		return fmt.Errorf("audit mode %q: use batch (records written within max_delay) or sync (every record on disk before the response)", c.Mode)
	}
	if c.MaxPending == 0 {
		c.MaxPending = defaultAuditMaxPending
	}
	if c.MaxPending < 1 {
		return fmt.Errorf("audit max_pending %d: give a positive number of records, such as %d", c.MaxPending, defaultAuditMaxPending)
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = caddy.Duration(defaultAuditMaxDelay)
	}
	if c.MaxDelay < caddy.Duration(time.Millisecond) {
		return fmt.Errorf("audit max_delay %s: give a duration of at least 1ms, such as 200ms", time.Duration(c.MaxDelay))
	}
	return nil
}

func newAuditQueue(cfg AuditConfig, dropped prometheus.Counter, logger *zap.Logger) *auditQueue {
	return &auditQueue{
		pending: make([]queuedRecord, 0, min(cfg.MaxPending, 1024)),
		spare:   make([]queuedRecord, 0, min(cfg.MaxPending, 1024)),
		next:    make(chan struct{}),
		space:   make(chan struct{}),
		max:     cfg.MaxPending,
		wakeAt:  min(auditChunk, cfg.MaxPending/2+1),
		delay:   time.Duration(cfg.MaxDelay),
		sync:    cfg.Mode == AuditModeSync,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		dropped: dropped,
		logger:  logger,
	}
}

// start runs the writer.
func (q *auditQueue) start() {
	go q.run()
}

// add queues the record of one decision; in sync mode it returns once the
// record is on disk. After close, it writes the record itself.
func (q *auditQueue) add(sink *auditSink, rec *auditRecord, reason policy.Reason) {
	q.mu.Lock()
	var timer *time.Timer
	for q.inMemory >= q.max && !q.closed {
		space := q.space
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(auditFullWait)
			defer timer.Stop()
		}
		select {
		case <-space:
			q.mu.Lock()
			continue
		case <-timer.C:
		}
		sink.count(rec, reason)
		q.drop()
		return
	}
	if q.closed {
		q.mu.Unlock()
		q.writeNow(sink, rec, reason)
		return
	}
	q.pending = append(q.pending, queuedRecord{sink: sink, rec: *rec, reason: reason})
	q.inMemory++
	n, written := len(q.pending), q.next
	q.mu.Unlock()
	if q.sync {
		if n == 1 {
			q.wake()
		}
		<-written
		return
	}
	if n == q.wakeAt {
		// A chunk is waiting: write it now rather than at MaxDelay, so
		// that the queue's memory stays small enough to stay in the
		// processor's cache (a request's copy and the writer's read of
		// it cost least there), and long before the queue fills.
		q.wake()
	}
}

func (q *auditQueue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// drop counts a record that found no room, and names the drops in an
// error line at most once a second.
func (q *auditQueue) drop() {
	n := q.droppedN.Add(1)
	q.dropped.Inc()
	now := time.Now().UnixNano()
	last := q.lastReport.Load()
	if now-last < int64(time.Second) || !q.lastReport.CompareAndSwap(last, now) {
		return
	}
	before := q.reportedN.Swap(n)
	q.logger.Error("the audit queue is full: gateway decision records were dropped; raise audit max_pending, or make the audit log's writer faster",
		zap.Uint64("dropped", n-before), zap.Uint64("dropped_total", n), zap.Int("max_pending", q.max))
}

// writeNow writes one record on the caller's goroutine, and flushes the
// buffered audit writers, so it is in the file when the caller returns.
func (q *auditQueue) writeNow(sink *auditSink, rec *auditRecord, reason policy.Reason) {
	sink.count(rec, reason)
	var fields [auditFieldCount]zap.Field
	writeAuditRecord(sink, rec, reason, &fields)
	q.flushWriters(sink)
}

// run is the writer: it takes the queue when woken, when MaxDelay has
// passed, and on close, until the queue is closed and empty.
func (q *auditQueue) run() {
	defer close(q.done)
	t := time.NewTicker(q.delay)
	defer t.Stop()
	var fields [auditFieldCount]zap.Field
	for {
		stopping := false
		select {
		case <-q.kick:
		case <-t.C:
		case <-q.stop:
			stopping = true
		}
		for q.writeBatch(&fields) {
		}
		if stopping {
			return
		}
	}
}

// writeBatch writes every record pending now, and reports whether there
// were any. In batch mode it hands the records to the kernel every
// auditChunk records and frees their room in the queue as it goes, so
// requests need not wait for a whole batch, and what is in memory (the
// queue, the batch, the writers' buffers) stays within MaxPending records.
func (q *auditQueue) writeBatch(fields *[auditFieldCount]zap.Field) bool {
	q.mu.Lock()
	batch := q.pending
	if len(batch) == 0 {
		q.mu.Unlock()
		return false
	}
	q.pending = q.spare[:0]
	written := q.next
	q.next = make(chan struct{})
	q.writing = written
	q.mu.Unlock()

	var last *auditSink
	for start := 0; start < len(batch); start += auditChunk {
		end := min(start+auditChunk, len(batch))
		for i := start; i < end; i++ {
			qr := &batch[i]
			if q.sync && last != nil && qr.sink != last {
				q.syncSink(last)
			}
			last = qr.sink
			qr.sink.count(&qr.rec, qr.reason)
			writeAuditRecord(qr.sink, &qr.rec, qr.reason, fields)
			batch[i] = queuedRecord{} // drop the references
		}
		if !q.sync {
			if err := flushAuditWriters(); err != nil {
				q.writeFailed(err)
			}
			q.release(end - start)
		}
	}
	if q.sync {
		q.syncSink(last)
		q.release(len(batch))
	}

	q.mu.Lock()
	q.spare = batch[:0]
	q.writing = nil
	q.mu.Unlock()
	close(written)
	return true
}

// auditChunk is how many records the writer writes between two flushes.
const auditChunk = 256

// release frees the room of n written records.
func (q *auditQueue) release(n int) {
	q.mu.Lock()
	q.inMemory -= n
	close(q.space)
	q.space = make(chan struct{})
	q.mu.Unlock()
}

// flushWriters hands what the buffered audit writers hold to the kernel,
// and in sync mode syncs sink's writers to disk.
func (q *auditQueue) flushWriters(sink *auditSink) {
	if q.sync && sink != nil {
		q.syncSink(sink)
		return
	}
	if err := flushAuditWriters(); err != nil {
		q.writeFailed(err)
	}
}

// syncSink syncs every writer the sink's logger writes to: the
// api_users_audit writer flushes and fsyncs, Caddy's file writer fsyncs.
func (q *auditQueue) syncSink(sink *auditSink) {
	if err := flushAuditWriters(); err != nil {
		q.writeFailed(err)
	}
	if err := sink.core.Sync(); err != nil && !isNotSyncable(err) {
		q.writeFailed(err)
	}
}

// writeFailed logs a failed write of audit records, at most once a
// second.
func (q *auditQueue) writeFailed(err error) {
	if q.writeErrors.Add(1) == 1 {
		q.logger.Error("writing audit records", zap.Error(err))
		go func() {
			time.Sleep(time.Second)
			q.writeErrors.Store(0)
		}()
	}
}

// flush returns once every record queued before the call is written.
func (q *auditQueue) flush() {
	q.mu.Lock()
	var wait chan struct{}
	switch {
	case len(q.pending) > 0:
		wait = q.next
	case q.writing != nil:
		wait = q.writing
	}
	closed := q.closed
	q.mu.Unlock()
	if wait == nil {
		return
	}
	if closed {
		// The writer is draining, or has drained.
		select {
		case <-wait:
		case <-q.done:
		}
		return
	}
	q.wake()
	<-wait
}

// close drains the queue and stops the writer. Records added afterwards
// are written on the adding goroutine. It is safe to call more than once,
// and on a queue whose writer never started.
func (q *auditQueue) close(started bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		if started {
			<-q.done
		}
		return
	}
	q.closed = true
	close(q.space) // a waiting request writes its record itself
	q.space = make(chan struct{})
	q.mu.Unlock()
	if started {
		close(q.stop)
		<-q.done
		return
	}
	var fields [auditFieldCount]zap.Field
	for q.writeBatch(&fields) {
	}
}

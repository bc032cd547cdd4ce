package caddymodule

import (
	"errors"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/logging"
)

func init() {
	caddy.RegisterModule(AuditFileWriter{})
}

// AuditFileWriter is the Caddy log writer api_users_audit: Caddy's file
// writer (the same file, permissions and rotation settings, and the same
// Caddyfile syntax as `output file`), with a buffer in front, so that the
// audit queue's writer hands a whole batch of gateway records to the
// kernel in one write(2) instead of one per record. Caddy's logging
// pipeline encodes and writes each entry on its own, which is what made
// the audit record the dearest part of a gateway request.
//
//	log audit {
//		include http.handlers.api_users.audit
//		output api_users_audit /var/log/caddy/api_users_audit.log {
//			roll_size 100MiB
//			roll_keep 10
//		}
//	}
//
// The audit queue flushes the buffer after every batch, and after every
// management record, so what the buffer holds is bounded by the audit
// settings of the api_users app (max_pending, max_delay). Anything else a
// config routes to this writer is flushed within a second, or as soon as
// 256 KiB are waiting. On sync, the buffer is flushed and the file synced
// to disk (fsync). Closing it (a config unload that drops it, or a
// graceful stop) flushes it.
type AuditFileWriter struct {
	logging.FileWriter
}

// CaddyModule returns the Caddy module information.
func (AuditFileWriter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.writers.api_users_audit",
		New: func() caddy.Module { return new(AuditFileWriter) },
	}
}

// WriterKey identifies the file; it differs from Caddy's file writer's, so
// the two never share an open file.
func (w AuditFileWriter) WriterKey() string {
	return "api_users_audit:" + w.Filename
}

// OpenWriter opens the file as Caddy's file writer does, and puts the
// buffer in front.
func (w AuditFileWriter) OpenWriter() (io.WriteCloser, error) {
	out, err := w.FileWriter.OpenWriter()
	if err != nil {
		return nil, err
	}
	b := &bufferedFile{out: out, buf: make([]byte, 0, auditBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	auditWriters.Lock()
	auditWriters.set[b] = struct{}{}
	auditWriters.Unlock()
	go b.flushLoop()
	return b, nil
}

// UnmarshalCaddyfile takes the same syntax as Caddy's `output file`:
//
//	output api_users_audit <filename> {
//		mode, roll_*, ... as for output file
//	}
func (w *AuditFileWriter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return w.FileWriter.UnmarshalCaddyfile(d)
}

const (
	// auditBufferSize is the buffer of an api_users_audit writer; a
	// write that would overflow it flushes it first.
	auditBufferSize = 256 << 10
	// auditFlushInterval bounds how long what is written to an
	// api_users_audit writer outside the audit queue stays in its buffer.
	auditFlushInterval = time.Second
)

// auditWriters are the api_users_audit writers open in this process: the
// audit queue flushes them after each batch. Caddy keeps one writer per
// file across config reloads, so a reload neither reopens nor loses it.
var auditWriters = struct {
	sync.Mutex
	set map[*bufferedFile]struct{}
}{set: map[*bufferedFile]struct{}{}}

// flushAuditWriters hands what every api_users_audit writer holds to the
// kernel.
func flushAuditWriters() error {
	auditWriters.Lock()
	defer auditWriters.Unlock()
	var errs []error
	for b := range auditWriters.set {
		if err := b.Flush(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// bufferedFile is an open api_users_audit writer.
type bufferedFile struct {
	mu     sync.Mutex
	out    io.WriteCloser // *os.File, or Caddy's rolling file
	buf    []byte
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// Write buffers p; it writes through to the file when the buffer is full
// or closed.
func (b *bufferedFile) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		// Nothing should come after the close (the app drains the audit
		// queue before Caddy closes its logs); if something does, it is
		// not held back in a buffer nobody flushes. Caddy's rolling
		// file reopens itself for it.
		return b.out.Write(p)
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.buf) {
			return b.out.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what the buffer holds to the file.
func (b *bufferedFile) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *bufferedFile) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.out.Write(b.buf)
	// On an error the records are not kept for another try: the file
	// may hold part of them, and a retry would duplicate that part.
	b.buf = b.buf[:0]
	return err
}

// Sync flushes the buffer and syncs the file to disk.
func (b *bufferedFile) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return err
	}
	if s, ok := b.out.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil && !isNotSyncable(err) {
			return err
		}
	}
	return nil
}

// Close flushes the buffer and closes the file. Caddy calls it when no
// loaded config uses the writer any more.
func (b *bufferedFile) Close() error {
	auditWriters.Lock()
	delete(auditWriters.set, b)
	auditWriters.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	err := b.flushLocked()
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	return errors.Join(err, b.out.Close())
}

// flushLoop flushes what was written outside the audit queue.
func (b *bufferedFile) flushLoop() {
	defer close(b.done)
	t := time.NewTicker(auditFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_ = b.Flush()
		}
	}
}

// isNotSyncable reports whether err is what fsync answers for a file that
// cannot be synced, such as a terminal or a pipe.
func isNotSyncable(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.ENOTTY)
}

// Interface guards.
var (
	_ caddy.WriterOpener    = (*AuditFileWriter)(nil)
	_ caddyfile.Unmarshaler = (*AuditFileWriter)(nil)
	_ caddy.Provisioner     = (*AuditFileWriter)(nil)
)

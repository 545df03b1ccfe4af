package tcp

import "slices"

// Batches. The transfers of one Submit call are cut into frames that are
// queued on their streams without waking the writers (streamBatch.enqueue);
// at the end of the call each stream touched writes its queue itself when
// it is idle and the frames are of host memory (flush): a batch of small
// writes to one peer leaves in one writev and is answered by one flush of
// acknowledgements, instead of one system call and one wake-up each. A
// large batch does not wait for its end: once quietFrames frames or a
// frame larger than an inline write are queued on a stream, its writer is
// woken and works while the rest of the batch is cut.
const quietFrames = 32

// batchStreamBytes: consecutive transfers of a batch to one peer share a
// stream until they add up to this many bytes; then the next stream takes
// over (a batch of small writes is one writev, large ones still spread).
const batchStreamBytes = 256 << 10

// streamBatch is the set of streams one batch queued frames on, and the
// stream it is filling for the peer of its latest transfer.
type streamBatch struct {
	streams []*stream
	peer    *peer
	next    int
	bytes   uint64
}

// start returns the index of the stream that the first frame of a
// transfer of size bytes to p goes to.
func (b *streamBatch) start(p *peer, size uint64) int {
	if b.peer != p || b.bytes >= batchStreamBytes {
		b.peer, b.next, b.bytes = p, int(p.next.Add(1)), 0
	}
	b.bytes += size
	return b.next
}

// enqueue queues f on s for the batch.
func (b *streamBatch) enqueue(s *stream, f *frame) error {
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	s.queue = append(s.queue, f)
	if len(s.queue) >= quietFrames || f.payload > uint64(s.p.b.cfg.InlineBelow) {
		s.cond.Signal()
	}
	s.mu.Unlock()
	if !slices.Contains(b.streams, s) {
		b.streams = append(b.streams, s)
	}
	return nil
}

// flush sends what the batch queued.
func (b *streamBatch) flush() {
	for _, s := range b.streams {
		s.flush()
	}
}

// flush writes the frames queued on s, itself when the stream is idle
// (as an inline write: never waiting for the socket), else by waking the
// writer.
func (s *stream) flush() {
	s.mu.Lock()
	if s.broken != nil || len(s.queue) == 0 {
		s.mu.Unlock()
		return
	}
	if !s.idleForInlineLocked() {
		s.cond.Signal()
		s.mu.Unlock()
		return
	}
	// The frames of host memory at the head of the queue, up to the
	// window; the writer takes the rest (writeBatch wakes it).
	batch := s.takeLocked(true)
	if len(batch) == 0 {
		s.cond.Signal()
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.mu.Unlock()
	if err := s.writeBatch(batch, true); err != nil {
		s.fail(err)
	}
}

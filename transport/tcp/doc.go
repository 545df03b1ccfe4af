// Package tcp is the data plane that works everywhere: one-sided reads and
// writes over TCP with the semantics of RDMA.
//
// An initiator holds several TCP streams to each peer. A transfer is cut into
// frames of at most ChunkSize bytes (large ranges split, small ranges
// coalesced, up to MaxEntries ranges a frame), frames are spread over the
// streams and written with vectored I/O straight from registered memory. The
// target checks every frame against its own registry before it touches
// memory, reads the payload straight into the registered region, and
// answers each frame in order on the same stream. A frame whose request is
// wrong is answered with an error and the stream goes on; a stream that
// breaks the protocol, or names memory with a token that is not the
// memory's (core.Registry.Resolve), is answered and closed.
//
// GPU memory (a region that is not Host) goes through the GPU driver's
// page-locked staging rings (core.GPU ReadStaged and WriteStaged): the
// writer of a stream gathers the ranges of a run of GPU frames into slots
// and writes each slot, behind the headers of the frames that start in it,
// while the next slots are being copied from the device; the target reads
// the socket into one slot while the previous ones are copied to the
// device. The wire format does not change.
//
// Files: backend.go (the core.Backend), peer.go (an initiator's streams to
// one peer, transfers cut into frames), stream.go (one stream: queue,
// writer, encoding), stream_read.go (its reader: responses matched to
// frames), staged.go (GPU payloads through staging rings), server.go (the
// target: one goroutine per stream reads, checks and answers frames),
// stall.go (the target's stall deadlines), proto.go (the wire format),
// handshake.go, admit.go and gone.go (who may open a stream), compress.go
// (optional compression of writes: negotiation, encoding, decoding into
// the registered ranges, the auto policy per peer; docs/compression.md).
//
// Wire format, little-endian, after a handshake (see handshake.go):
//
//	request  (56 bytes): magic u16 | type u8 | flags u8 | mem id u32 | uid u64 |
//	                     instance u64 | parts u32 | entries u32 | payload u64 |
//	                     token [16] (the memory's access token, from its MemoryDesc)
//	         then entries × (remote offset u64, size u64), then the payload (writes)
//	response (16 bytes): magic u16 | type u8 | code u8 | message length u32 | payload u64
//	         then the message, then the payload (reads)
//
// A write with flag 1 (flagCompressed) carries a transport/compress frame as
// its payload (payload u64 is the frame's length; the entries add up to the
// raw bytes); it is sent only to a target whose handshake verdict offered
// compression (compressOffer).
package tcp

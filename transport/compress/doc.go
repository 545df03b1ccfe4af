// Package compress is the optional compression stage of the TCP data plane,
// for links that are slower than a core compresses (PD disaggregation across
// racks or zones without RDMA).
//
// A payload (the bytes of a list of ranges, in order) is cut into blocks of
// BlockSize bytes over the concatenation of the ranges; blocks are compressed
// in parallel with s2 or zstd (github.com/klauspost/compress) by at most
// Workers goroutines, each with its own scratch buffers, so nothing is
// allocated per range. Before compression each block may be byte-plane
// shuffled for elements of ElemSize bytes (bf16/fp16 K/V: the sign and
// exponent bytes compress far better apart from the mantissa bytes). A block
// that does not shrink is stored as is.
//
// The receiver decodes a frame straight into the caller's destination
// slices: a block that lies inside one destination is decompressed into it,
// one that straddles destinations goes through a scratch buffer. Every
// length in a frame is checked before anything is written, and decoders are
// bounded by the destination's capacity, so a frame that decompresses past
// its range (a decompression bomb) is refused and nothing is written outside
// the destinations.
//
// Auto decides per batch whether compressing pays, from the measured link
// throughput and the measured speed and ratio of the codecs on samples of
// the data, and backs off when it does not.
//
// Frame format, little-endian:
//
//	header (32 bytes): magic u16 | version u8 | codec u8 | elem size u8 | 0 u8 | 0 u16 |
//	                   blocks u32 | 0 u32 | raw bytes u64 | block bytes u64
//	then blocks × (raw size u32, wire size u32), then the blocks' bytes.
//	A block whose wire size equals its raw size is stored (not compressed,
//	not shuffled); a compressed block is smaller than its raw size. A
//	compressed block of a shuffled frame (elem size 2 or more) is its elem
//	byte planes one after the other, each as wire size u32 and bytes,
//	stored when the wire size equals the plane's (the last plane holds the
//	bytes past the last whole element). In a zstd frame the top bit of a
//	plane's size marks a plane coded with huff0 alone (zstd's Huffman
//	stage: exponent bytes have a skewed histogram and few repeats).
package compress

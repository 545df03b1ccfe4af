// Command capi is the C ABI of mori-go, built with -buildmode=c-shared into
// libmori_go.so; include/mori_go.h declares it.
//
// The public functions are written in C (mori_go.c): they refuse to run in
// a forked child, where the Go runtime would hang, and hold the per-thread
// last-error message. They call the Go exports in this package, named mgo_*,
// each of which recovers panics into MG_ERR_INTERNAL so that a bug never
// kills the host process. Engines and statuses cross the ABI as integer
// handles from one table (handles); no Go pointer ever crosses. The
// package maps C to Go and back and nothing more: the engine (core/engine)
// checks requests, decodes descriptors and makes every status.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../include -Wall -Werror
#include "mori_go.h"
void mg_set_error(const char *msg, size_t len);
void mg_clear_error(void);
*/
import "C"

func main() {}

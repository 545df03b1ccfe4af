// Package faults holds mori-go's fault-injection tests: peers killed
// mid-transfer, restarted at the same address, stopped (SIGSTOP) past
// their timeout; link faults between network namespaces (link down, packet
// loss with nftables, rate limits with tc tbf); delay and jitter through
// Toxiproxy; one stream reset mid-transfer; 10,000 transfers at their
// deadline; load, hostile peers through the engine's public API,
// authentication, and deregistration with transfers in flight. They run under `go test ./...`; every wait in them
// has a hard deadline. docs/reliability.md lists what each test shows and
// the figures it printed.
//
// The package has no code of its own: everything is in its _test files.
package faults

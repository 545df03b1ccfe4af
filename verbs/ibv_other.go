//go:build !linux || !cgo

package verbs

import "fmt"

// LibName is the libibverbs soname that System loads.
const LibName = "libibverbs.so.1"

type noProvider struct{}

func (noProvider) Devices() ([]DeviceInfo, error) {
	return nil, fmt.Errorf("%w: this build has no verbs layer (needs linux and cgo)", ErrNotSupported)
}

func (noProvider) Open(name string) (Context, error) {
	return nil, fmt.Errorf("%w: open %s: this build has no verbs layer (needs linux and cgo)", ErrNotSupported, name)
}

// System returns the provider over the host's libibverbs; this build has
// none, so its methods fail with ErrNotSupported.
func System() Provider { return noProvider{} }

// Load fails: this build has no verbs layer.
func Load(name string) (Provider, error) {
	return nil, fmt.Errorf("%w: load %s: this build has no verbs layer", ErrNotSupported, name)
}

func checkABI() error { return nil }

package engine

import "github.com/mori-go/mori-go/core"

// Factory builds one data plane for an engine. cfg is the backend's own
// configuration as given to CreateBackend (nil: its defaults); a factory
// refuses a configuration of a type it does not know. Data planes export
// factories of this shape without importing this package.
type Factory func(env core.BackendEnv, cfg any) (core.Backend, error)

// SameHost is the same-host GPU path as the engine uses it: a backend that
// says whether it reaches a transfer's remote memory.
type SameHost interface {
	core.Backend
	// Reaches reports whether t goes this way (a peer on this node, GPU
	// memory on both sides, a remote memory the path can map; it may open
	// that mapping, once per memory). An error fails t.
	Reaches(t *core.Transfer) (bool, error)
}

// SameHostFactory builds the same-host path.
type SameHostFactory func(env core.BackendEnv) (SameHost, error)

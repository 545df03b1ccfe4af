package engine

import "github.com/mori-go/mori-go/core"

// Factory builds one data plane for an engine. cfg is the backend's own
// configuration as given to CreateBackend (nil: its defaults); a factory
// refuses a configuration of a type it does not know. Data planes export
// factories of this shape without importing this package.
type Factory func(env core.BackendEnv, cfg any) (core.Backend, error)

// SameHost is the same-host GPU path as the engine uses it: a backend that
// says which transfers it takes.
type SameHost interface {
	core.Backend
	// Takes reports whether t goes this way (a peer on this node, GPU
	// memory on both sides).
	Takes(t *core.Transfer) bool
}

// SameHostFactory builds the same-host path. dataPlane returns the
// engine's data plane (nil before CreateBackend), for transfers the path
// hands on.
type SameHostFactory func(env core.BackendEnv, dataPlane func() core.Backend) (SameHost, error)

package engine_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The import rules of ARCHITECTURE.md: the engine imports no data plane,
// no data plane imports the engine or a sibling data plane, the driver
// bindings (verbs, gpu) import only core, and internal/ helpers import no
// room above them.
func TestImportRules(t *testing.T) {
	const mod = "github.com/mori-go/mori-go/"
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "../../...").CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, ": ")
		if strings.HasPrefix(pkg, mod) {
			imports[strings.TrimPrefix(pkg, mod)] = strings.Fields(deps)
		}
	}
	require.Contains(t, imports, "core/engine")
	dataPlane := func(p string) bool {
		return strings.HasPrefix(p, "transport/") || p == "verbs" || strings.HasPrefix(p, "verbs/")
	}
	// Packages under transport/ that are codecs for the data planes, not
	// data planes themselves.
	sharedCodec := map[string]bool{"transport/compress": true}
	for pkg, deps := range imports {
		for _, d := range deps {
			d, ok := strings.CutPrefix(d, mod)
			if !ok {
				continue
			}
			if strings.HasPrefix(pkg, "core") && dataPlane(d) {
				t.Errorf("%s imports data plane %s: backends are handed to the engine (package stack)", pkg, d)
			}
			if dataPlane(pkg) && d == "core/engine" {
				t.Errorf("data plane %s imports core/engine", pkg)
			}
			if strings.HasPrefix(pkg, "core") && d == "stack" {
				t.Errorf("%s imports stack, which assembles it", pkg)
			}
			if sibling, ok := strings.CutPrefix(d, "transport/"); ok && strings.HasPrefix(pkg, "transport/") &&
				!strings.HasPrefix(pkg, "transport/"+sibling) && !sharedCodec[d] {
				t.Errorf("data plane %s imports its sibling %s: data planes share only core", pkg, d)
			}
			if (pkg == "verbs" || strings.HasPrefix(pkg, "verbs/") || pkg == "gpu") && (dataPlane(d) && !strings.HasPrefix(d, "verbs") || strings.HasPrefix(d, "core/")) {
				t.Errorf("%s is a driver binding: it imports %s (it may import only core)", pkg, d)
			}
			if strings.HasPrefix(pkg, "internal/") && (d == "stack" || strings.HasPrefix(d, "core/") || dataPlane(d)) {
				t.Errorf("%s is a helper under internal/: it imports %s", pkg, d)
			}
		}
	}
}

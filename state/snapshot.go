package state

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// SnapshotFormat is the format version Persist writes. Restore reads every
// format up to it and refuses a newer one.
const SnapshotFormat = 1

// snapshotFile is the persisted state. It is its own type, apart from the
// read API, because it is a wire format: fields are only ever added.
type snapshotFile struct {
	Format       int                    `json:"format"`
	AppliedIndex uint64                 `json:"applied_index"`
	ChangeIndex  uint64                 `json:"change_index"`
	Versions     []snapshotVersion      `json:"versions"`
	Servers      map[string]ServerState `json:"servers"`
	Views        map[string]NodeView    `json:"views"`
	Verdicts     map[string]bool        `json:"verdicts"`
	VerdictBasis VerdictBasis           `json:"verdict_basis"`
	Nodes        []Node                 `json:"nodes"`
	Revoked      []Revocation           `json:"revoked"`
}

type snapshotVersion struct {
	Version uint64     `json:"version"`
	Kind    ConfigKind `json:"kind"`
	Time    time.Time  `json:"time"`
	Origin  string     `json:"origin,omitempty"`
	Source  uint64     `json:"source,omitempty"`
	Index   uint64     `json:"index"`
	YAML    string     `json:"yaml"`
}

// Snapshot is a point-in-time copy of the store for Raft: taking it only
// captures the current immutable view, so it is cheap and Apply goes on
// while Persist writes it.
type Snapshot struct {
	view    *View
	applied uint64
}

// Snapshot captures the current state.
func (s *Store) Snapshot() (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Snapshot{view: s.cur.Load(), applied: s.applied.Load()}, nil
}

// Persist writes the snapshot to w as one JSON document. Equal states
// write equal bytes. It does not close w.
func (sn *Snapshot) Persist(w io.Writer) error {
	v := sn.view
	f := snapshotFile{
		Format:       SnapshotFormat,
		AppliedIndex: sn.applied,
		ChangeIndex:  v.index,
		Versions:     make([]snapshotVersion, len(v.versions)),
		Servers:      v.servers,
		Views:        v.views,
		Verdicts:     v.verdicts,
		VerdictBasis: v.basis,
		Nodes:        v.Nodes(),
		Revoked:      v.Revocations(),
	}
	for i, cv := range v.versions {
		f.Versions[i] = snapshotVersion{
			Version: cv.Version, Kind: cv.Kind, Time: cv.Time, Origin: cv.Origin,
			Source: cv.Source, Index: cv.Index, YAML: cv.YAML,
		}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&f); err != nil {
		return fmt.Errorf("persist state snapshot: %w", err)
	}
	return nil
}

// Release implements raft's FSMSnapshot; the snapshot holds no resources.
func (sn *Snapshot) Release() {}

// Restore replaces the whole state with a persisted snapshot. It builds the
// new state apart, parsing every config version again, and swaps it in
// only when complete: on error the store is unchanged. A version that this
// version of the code no longer accepts is kept, with Config nil and
// ParseError set, rather than failing the restore: its number and document
// are history that the cluster agreed on.
func (s *Store) Restore(r io.Reader) error {
	var f snapshotFile
	if err := json.NewDecoder(r).Decode(&f); err != nil {
		return fmt.Errorf("restore state snapshot: %w", err)
	}
	v, err := f.build()
	if err != nil {
		return fmt.Errorf("restore state snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied.Store(f.AppliedIndex)
	s.publish(v)
	return nil
}

func (f *snapshotFile) build() (*View, error) {
	if f.Format < 1 || f.Format > SnapshotFormat {
		return nil, fmt.Errorf("format %d, this version reads formats 1 to %d", f.Format, SnapshotFormat)
	}
	v := emptyView()
	v.index = f.ChangeIndex
	for i, sv := range f.Versions {
		if sv.Version != uint64(i)+1 {
			return nil, fmt.Errorf("config version %d at position %d (versions must run 1, 2, 3, ...)", sv.Version, i+1)
		}
		cv := &ConfigVersion{
			Version: sv.Version, Kind: sv.Kind, Time: sv.Time, Origin: sv.Origin,
			Source: sv.Source, Index: sv.Index, YAML: sv.YAML,
		}
		cfg, err := Parse([]byte(sv.YAML))
		if err != nil {
			cv.ParseError = err.Error()
		} else {
			cv.Config = cfg
		}
		v.versions = append(v.versions, cv)
	}
	if cur := v.latest(); cur != nil {
		v.keys, v.keySet = serverKeys(cur.Config)
	}
	for k, st := range f.Servers {
		if st.Admin == "" {
			st.Admin = AdminReady
		}
		if !st.isDefault() {
			v.servers[k] = st
		}
	}
	for n, nv := range f.Views {
		if nv.Servers == nil {
			nv.Servers = map[string]bool{}
		}
		v.views[n] = nv
	}
	if f.Verdicts != nil {
		v.verdicts = f.Verdicts
	}
	v.basis = f.VerdictBasis
	for _, n := range f.Nodes {
		if _, dup := v.nodes[n.Name]; dup {
			return nil, fmt.Errorf("node %q listed twice", n.Name)
		}
		v.nodes[n.Name] = n
	}
	for _, r := range f.Revoked {
		r.Serial = NormalizeSerial(r.Serial)
		v.revoked[r.Serial] = r
	}
	return v, nil
}

package cluster

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// The AdminClient's cluster and replicated-config calls. A refusal comes
// back as an *APIError: code "standalone" on a node that is not in a
// cluster, "no_quorum" when no leader can be reached, "stale" for a lost
// --if-version race, "invalid" or "invalid_config" (with Faults) for a
// config with faults.

// ClusterInit calls POST /v1/cluster/init: the node becomes the first
// member of a new cluster, its proxy config file config version 1.
func (c *AdminClient) ClusterInit(ctx context.Context) (InitResult, error) {
	var res InitResult
	err := c.call(ctx, http.MethodPost, "/v1/cluster/init", struct{}{}, &res)
	return res, err
}

// ClusterJoin calls POST /v1/cluster/join: the node joins the cluster of
// the member at addr (host or host:api_port) with a join token.
func (c *AdminClient) ClusterJoin(ctx context.Context, addr, token string) error {
	var ok OK
	return c.call(ctx, http.MethodPost, "/v1/cluster/join", JoinRequest{Address: addr, Token: token}, &ok)
}

// ClusterLeave calls POST /v1/cluster/leave: the node leaves the cluster
// for good and goes back to standalone.
func (c *AdminClient) ClusterLeave(ctx context.Context) error {
	var ok OK
	return c.call(ctx, http.MethodPost, "/v1/cluster/leave", struct{}{}, &ok)
}

// ClusterRemove calls POST /v1/cluster/remove: another node is taken out
// of the cluster.
func (c *AdminClient) ClusterRemove(ctx context.Context, node string) error {
	var ok OK
	return c.call(ctx, http.MethodPost, "/v1/cluster/remove", NodeRequest{Node: node}, &ok)
}

// ClusterFailover calls POST /v1/cluster/failover: the leader hands its
// leadership to the node named, or to any voter when to is "".
func (c *AdminClient) ClusterFailover(ctx context.Context, to string) error {
	var ok OK
	return c.call(ctx, http.MethodPost, "/v1/cluster/failover", NodeRequest{Node: to}, &ok)
}

// ClusterStatus calls GET /v1/cluster/status.
func (c *AdminClient) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := c.call(ctx, http.MethodGet, "/v1/cluster/status", nil, &st)
	return st, err
}

// Members calls GET /v1/cluster/members: the gossip members as this node
// sees them.
func (c *AdminClient) Members(ctx context.Context) ([]Member, error) {
	var ms []Member
	err := c.call(ctx, http.MethodGet, "/v1/cluster/members", nil, &ms)
	return ms, err
}

// ApplyConfig calls POST /v1/config/apply with a proxy config document.
// ifVersion (0: none) refuses the write unless the cluster is at that
// version; wait bounds the wait for every live node to run the new version
// (0: do not wait; negative: the agent's default, 5 s).
func (c *AdminClient) ApplyConfig(ctx context.Context, doc string, ifVersion uint64, wait time.Duration) (ApplyResult, error) {
	var res ApplyResult
	req := ConfigApplyRequest{YAML: doc, IfVersion: ifVersion, Wait: waitString(wait)}
	err := c.call(ctx, http.MethodPost, "/v1/config/apply", req, &res)
	return res, err
}

// RollbackConfig calls POST /v1/config/rollback: the document of version
// to is committed again, as a new version.
func (c *AdminClient) RollbackConfig(ctx context.Context, to, ifVersion uint64, wait time.Duration) (ApplyResult, error) {
	var res ApplyResult
	req := ConfigRollbackRequest{To: to, IfVersion: ifVersion, Wait: waitString(wait)}
	err := c.call(ctx, http.MethodPost, "/v1/config/rollback", req, &res)
	return res, err
}

// ConfigHistory calls GET /v1/config/history: every committed version,
// oldest first, without the documents.
func (c *AdminClient) ConfigHistory(ctx context.Context) ([]state.ConfigVersion, error) {
	var h []state.ConfigVersion
	err := c.call(ctx, http.MethodGet, "/v1/config/history", nil, &h)
	return h, err
}

// ConfigVersion calls GET /v1/config/version: one committed version with
// its document; 0 asks for the current one. Config is not filled in.
func (c *AdminClient) ConfigVersion(ctx context.Context, version uint64) (state.ConfigVersion, error) {
	var cv state.ConfigVersion
	path := "/v1/config/version"
	if version != 0 {
		path += "?version=" + strconv.FormatUint(version, 10)
	}
	err := c.call(ctx, http.MethodGet, path, nil, &cv)
	return cv, err
}

// ConfigDiff calls GET /v1/config/diff: a line diff from version a to b.
func (c *AdminClient) ConfigDiff(ctx context.Context, a, b uint64) (string, error) {
	var out struct {
		Diff string `json:"diff"`
	}
	q := url.Values{"a": {strconv.FormatUint(a, 10)}, "b": {strconv.FormatUint(b, 10)}}
	err := c.call(ctx, http.MethodGet, "/v1/config/diff?"+q.Encode(), nil, &out)
	return out.Diff, err
}

// waitString is a wait as the agent parses it; "" is its default.
func waitString(d time.Duration) string {
	if d < 0 {
		return ""
	}
	return d.String()
}

// Package pki is the cluster's own public key infrastructure: the cluster CA,
// node and operator certificates, the join token, the gossip key, and the
// mutual-TLS configurations that Raft, the admin API between nodes and
// forwarded writes use.
//
// # Keys and certificates
//
// `fulcrum cluster init` creates a CA ([NewCA]: ECDSA P-256, self-signed, ten
// years) and a 32-byte cluster secret ([NewSecret]). The CA key never leaves
// the node that holds it; that node issues every other certificate itself
// ([CA.IssueNode], [CA.IssueClient]) and hands the key pair over the join
// channel, so no CSR flow is needed. Node certificates (OU=node) carry both the
// server and client auth usages, last two years and name the node in the CN
// and, when it is a valid host name, in a DNS SAN; operator certificates
// (OU=operator, `fulcrum cluster issue-cert NAME`) are good for client auth
// only. Every certificate has a random 128-bit serial, written as 32 lowercase
// hex digits ([Serial]); that string is what the replicated deny list holds and
// what the revoked callback of [ServerTLS], [APIServerTLS] and [ClientTLS] is
// asked about at every handshake, resumptions included.
//
// The CA is kept in a directory ([CA.Save], [LoadCA]) as ca.crt (0644) and
// ca.key (0600); LoadCA refuses a key that group or others can read.
//
// # Join token
//
// The token that `cluster init` prints is
//
//	fulcrum1.<base64url(secret), no padding: 43 characters>.<SHA-256 of the CA certificate's DER: 64 hex digits>
//
// ([NewToken], [ParseToken]). It carries two things: the secret, which proves
// that the joiner was let in by an operator, and the CA fingerprint
// ([CA.Fingerprint]), which pins the cluster so that the joiner cannot be
// fooled by a man in the middle. The gossip encryption key is derived from
// the same secret ([GossipKey]), so every member can compute it.
//
// # Joining, step by step
//
//  1. The joiner parses the token and dials the API port of any member with
//     [PinnedClientTLS]: it has no CA file yet, so it accepts the server iff
//     the chain the server sends contains a CA certificate whose fingerprint
//     is the pinned one and the server's leaf verifies against that CA alone
//     (for server auth). A member's [tls.Certificate] must therefore carry the
//     CA certificate after the leaf, which [KeyPair] does. An impostor that
//     replays the real CA certificate cannot sign a leaf with it.
//  2. Both ends compute a per-connection nonce from the TLS exporter
//     ([ExportJoinNonce]); a server that prefers a challenge can send
//     [NewNonce] instead. The joiner sends its node name and
//     [JoinProof](secret, name, nonce), an HMAC-SHA256 under a key derived
//     from the secret: the secret itself is never sent, and a proof recorded
//     on one connection is worthless on another.
//  3. The server (whose API port uses [APIServerTLS], so a client without a
//     certificate may complete the handshake and reach only the join
//     endpoint) checks the proof with [VerifyJoinProof] (constant time), has
//     the CA-holding node issue a node certificate, and answers with the
//     certificate, its key and the CA certificate. The joiner checks the CA
//     certificate against the pin once more ([ParseCAPEM]) and stores the
//     three files with the secret.
//  4. From then on the joiner uses [ServerTLS] and [ClientTLS] (mutual TLS
//     1.3, cluster CA only, deny list checked) and memberlist's keyring holds
//     [GossipKey](secret). Listeners that must only see nodes (Raft) wrap the
//     config with [RequireRole](cfg, [RoleNode]); handlers read the verified
//     peer with [PeerIdentity].
//
// Revocation is checked at the handshake only: when a node is removed, the
// caller must also close the connections it already holds.
package pki

package proto

// TLSInfo is the "tls" object of an open event: what the hellos of a TLS
// connection said, and whether it could be decrypted. It never holds a
// secret.
type TLSInfo struct {
	Version     string `json:"version,omitempty"`      // "TLS 1.2", "TLS 1.3"
	CipherSuite string `json:"cipher_suite,omitempty"` // IANA name
	ServerName  string `json:"sni,omitempty"`
	ALPN        string `json:"alpn,omitempty"`
	Resumed     bool   `json:"resumed,omitempty"`
	// ClientHelloMissing: the client's direction was not mirrored; the
	// secrets were found by trying recent ones on the server's records
	// (SNI is then unknown).
	ClientHelloMissing bool `json:"client_hello_missing,omitempty"`
	// Undecryptable is set when records were given up because their keys
	// did not arrive in time (or the connection cannot be decrypted at all:
	// Error says why). None of those records' bytes is published.
	Undecryptable bool   `json:"undecryptable,omitempty"`
	Error         string `json:"error,omitempty"`
}

// TLSLoss counts the TLS records of one direction for a close event.
type TLSLoss struct {
	Records              int64 `json:"records"`                         // records decrypted
	RecordsLost          int64 `json:"records_lost,omitempty"`          // touched by a gap
	RecordsUndecryptable int64 `json:"records_undecryptable,omitempty"` // failed authentication or keys never came
	PlaintextLost        int64 `json:"plaintext_lost,omitempty"`        // application bytes not published because of them (the most there can have been)
	// PlaintextLostMin, when present, is the fewest application bytes
	// there can have been in PlaintextLost (lost CBC records: padding
	// unknown; ciphertext lost in an unknown number of records); absent,
	// PlaintextLost is exact.
	PlaintextLostMin *int64 `json:"plaintext_lost_min,omitempty"`
}

// TLSClose is the "tls" object of a close event.
type TLSClose struct {
	Undecryptable bool    `json:"undecryptable,omitempty"`
	C2S           TLSLoss `json:"c2s"`
	S2C           TLSLoss `json:"s2c"`
}

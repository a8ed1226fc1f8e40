// Package tlsdec decrypts mirrored TLS connections from their session
// secrets in the NSS key log format (SSLKEYLOGFILE, Go's
// tls.Config.KeyLogWriter).
//
// It has three parts, none of which touches the network:
//
//   - the key log: ParseKeyLogLine reads one line, KeyStore holds the
//     secrets of many connections by client random, bounded in entries and
//     age, safe for concurrent use;
//   - the hello parser: ParseClientHello and ParseServerHello read the
//     client random, versions (supported_versions included), cipher suite,
//     SNI, ALPN, HelloRetryRequest and PSK/resumption offers;
//   - Conn: the decryptor of one connection, fed with the two reassembled
//     TCP byte streams in order (Data) with explicit losses (Gap), which
//     hands the application data of each direction to a Sink in order and
//     reports what it could not pass on in plaintext bytes.
//
// Record protection uses only crypto/aes, crypto/cipher, crypto/hmac,
// crypto/hkdf and golang.org/x/crypto/chacha20poly1305. A record that
// fails authentication is never passed on.
package tlsdec

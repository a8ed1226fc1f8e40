package reassemble

import "github.com/tapline/tapline/reassemble/message"

// defaultDecoder is the WebSocket / raw TCP decoder of package message.
var defaultDecoder DecoderFunc = message.New

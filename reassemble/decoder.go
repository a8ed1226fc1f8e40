package reassemble

// defaultDecoder is message.New once the message package provides it.
var defaultDecoder DecoderFunc

package proto

// JetStream acknowledgement bodies, published to a delivery's reply
// subject by the consuming stages (which acknowledge by stream sequence on
// their own schedule, not through the client's Msg methods). Read-only.
var (
	// AckBody acknowledges a delivery: JetStream will not send it again.
	AckBody = []byte("+ACK")
	// ProgressBody (work in progress) resets a delivery's AckWait.
	ProgressBody = []byte("+WPI")
	// NakBody hands a delivery back for redelivery now.
	NakBody = []byte("-NAK")
)

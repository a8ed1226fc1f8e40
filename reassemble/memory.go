package reassemble

// Memory budget (--max-memory). Each shard worker gets an even share of
// the budget, fixed at start (the shards run in their own goroutines; a
// share needs no coordination and is deterministic). Its tracker charges
// ConnCost per connection plus what each connection holds (see
// tcp.Sizer and message.Sizer) and closes the least recently active
// connections with reason memory when a packet leaves it over its share.

// ConnCost is the fixed heap of one connection of the reassembler
// charged against --max-memory: the tracker's entry and Conn, this
// package's conn, the decoder with both directions and their strings.
// TestConnCost measures it (a SYN-only connection) and checks that it
// covers what one really takes.
const ConnCost = 4096

// minShardMemory is the smallest share of --max-memory a shard may get.
const minShardMemory = 1 << 20

// shardCount is the number of shards this instance consumes.
func (c *Config) shardCount() int {
	s, err := c.shards()
	if err != nil || len(s) == 0 {
		return 1
	}
	return len(s)
}

// shardMemory is each shard's share of --max-memory.
func (c *Config) shardMemory() int64 {
	return c.MaxMemory / int64(c.shardCount())
}

package main

// summary is what `decap --help` prints before the flags: the stage and its
// sub-commands.
const summary = `decap receives AWS VPC Traffic Mirroring (VXLAN) and Gateway Load Balancer
(GENEVE) traffic, or reads a capture (--read), and publishes the inner frames
to JetStream.

Commands:
  decap [flags]                     the live intake (or --read FILE, one-shot)
  decap send FILE --to HOST:PORT    send a capture to a target the way AWS would
                                    (decap send --help)
  decap healthcheck [--http ADDR]   probe a running decap's /healthz`

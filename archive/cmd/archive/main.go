// Command archive is Tapline's archive stage and its query tools:
//
//	archive [flags]          consume TAPLINE_FRAMES into the archive
//	archive ls [flags]       list the chunks of a time range
//	archive query [flags]    write the packets of a time range as pcapng
//
// Run any of them with --help for the flags (each has a TAPLINE_<FLAG>
// environment equivalent).
package main

import (
	"fmt"
	"os"

	"github.com/tapline/tapline/archive"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "ls":
			os.Exit(lsMain(os.Args[2:]))
		case "query":
			os.Exit(queryMain(os.Args[2:]))
		case "run":
			os.Args = append(os.Args[:1], os.Args[2:]...)
		case "-h", "-help", "--help", "help":
			fmt.Println("archive: Tapline's packet archive.\n\n" +
				"  archive [flags]        consume TAPLINE_FRAMES into the archive (also: archive run)\n" +
				"  archive ls [flags]     list the chunks of a time range (archive ls --help)\n" +
				"  archive query [flags]  write the packets of a time range as pcapng (archive query --help)")
			os.Args = append(os.Args[:1], "--help")
		}
	}
	os.Exit(archive.Stage().Main(os.Args[1:]))
}

// Command alibaba-sdk puts Alibaba Cloud's official Go SDK in front of this project's signer and
// ECS simulator, so that both are judged by Alibaba's own code rather than by each other:
//
//	alibaba-sdk oracle   signatures computed by the SDK's own signing functions
//	alibaba-sdk client   ECS calls made by the SDK's generated ECS client (ecs-20140526/v7)
//
// Both modes read one JSON object per line on standard input and write one JSON object per line
// on standard output, in order, so that a test can push many thousands of cases through one
// long-running process. A line that cannot be served is answered {"error": "..."}; the process
// only exits at the end of its input.
//
// The SDK is pinned in go.mod/go.sum (github.com/alibabacloud-go/ecs-20140526/v7 v7.7.0 with
// github.com/alibabacloud-go/darabonba-openapi/v2 v2.1.14 and github.com/alibabacloud-go/tea
// v1.3.13). The build script next to this file builds it once into the user's cache.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 || (os.Args[1] != "oracle" && os.Args[1] != "client") {
		fmt.Fprintln(os.Stderr, "usage: alibaba-sdk oracle|client   (JSON lines on stdin, JSON lines on stdout)")
		os.Exit(2)
	}
	serve := oracle
	if os.Args[1] == "client" {
		serve = client
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	w := bufio.NewWriter(os.Stdout)
	out := json.NewEncoder(w)
	out.SetEscapeHTML(false)
	for in.Scan() {
		answer := serve(in.Bytes())
		if err := out.Encode(answer); err != nil {
			fmt.Fprintln(os.Stderr, "alibaba-sdk: cannot encode an answer:", err)
			os.Exit(1)
		}
		if err := w.Flush(); err != nil {
			os.Exit(1) // the reader went away
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "alibaba-sdk: reading standard input:", err)
		os.Exit(1)
	}
}

type failure struct {
	Error string `json:"error"`
}

func fail(format string, args ...any) failure {
	return failure{Error: fmt.Sprintf(format, args...)}
}

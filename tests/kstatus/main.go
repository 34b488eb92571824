// kstatus: the verdict of sigs.k8s.io/cli-utils's kstatus (pkg/kstatus/status, what Flux uses for
// health) on Kubernetes objects. Reads one JSON object per line on stdin and answers one JSON line
// each, in order: {"status": "...", "message": "..."} from status.Compute on the object as
// unstructured, or {"error": "..."} for a line it cannot judge. See README.md.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func judge(line []byte) verdict {
	// apimachinery's decoder, as client-go's: integers become int64, which unstructured's
	// accessors (metadata.generation, status.observedGeneration) require.
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(line, &obj); err != nil {
		return verdict{Error: fmt.Sprintf("not a JSON object: %v", err)}
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return verdict{Error: fmt.Sprintf("status.Compute: %v", err)}
	}
	return verdict{Status: result.Status.String(), Message: result.Message}
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < objects.jsonl  (one Kubernetes object as JSON per line)")
		os.Exit(2)
	}
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 && !(len(line) == 1 && line[0] == '\n') {
			if encErr := enc.Encode(judge(line)); encErr != nil {
				fmt.Fprintln(os.Stderr, "kstatus: write:", encErr)
				os.Exit(1)
			}
			// One answer per line as it comes, so a caller may interleave requests and answers.
			if flushErr := out.Flush(); flushErr != nil {
				fmt.Fprintln(os.Stderr, "kstatus: write:", flushErr)
				os.Exit(1)
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: read:", err)
			os.Exit(1)
		}
	}
}

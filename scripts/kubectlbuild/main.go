// Command kubectl is kubectl of the pinned release, built from the k8s.io/kubectl
// module alone: `./dev setup` gives a user without the local cluster's build a
// kubectl in minutes instead of compiling all of Kubernetes.
package main

import (
	"os"

	// The client authentication plugins (oidc) that Kubernetes' own kubectl links.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectl "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

// main does what Kubernetes' cmd/kubectl does: the verbosity is set before the
// command is built (plugins and .kuberc are read then); errors are printed the
// way kubectl prints them, with its exit codes.
func main() {
	logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
	if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
	os.Exit(0)
}

// Command k8s is every component of the local cluster in one binary.
//
// It dispatches on the name it is run as (the basename of argv[0]), so that
// one link of the shared packages serves every component through symlinks:
// bin/kube-apiserver -> k8s, bin/kubectl -> k8s, and so on. Run as "k8s" it
// takes the component's name as its first argument instead.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	// kubectl's client authentication plugins (oidc), as cmd/kubectl links them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/logs"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// components maps a command name to the function that runs it and returns
// the process's exit code. Each one does what that command's own main does.
var components = map[string]func() int{
	"kube-apiserver": func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func() int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	},
	"kube-scheduler": func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubelet":        func() int { return cli.Run(kubelet.NewKubeletCommand(context.Background())) },
	"kube-proxy":     func() int { return cli.Run(proxy.NewProxyCommand()) },
	"kubectl":        runKubectl,
	"etcd": func() int {
		etcdmain.Main(os.Args)
		return 0
	},
}

// runKubectl does what cmd/kubectl's main does: the verbosity is set before the
// command is built (plugins and .kuberc are read then), and errors are printed
// the way kubectl prints them, with its exit codes.
func runKubectl() int {
	logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
	if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
		kubectlutil.CheckErr(err)
	}
	return 0
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, known := components[name]; !known && len(os.Args) > 1 {
		// "k8s kubectl get pods": the component is the first argument.
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	run, known := components[name]
	if !known {
		names := make([]string, 0, len(components))
		for n := range components {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "k8s: unknown component %q; run as (or with first argument) one of %v\n", name, names)
		os.Exit(2)
	}
	os.Exit(run())
}

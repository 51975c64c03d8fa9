// Command k8s is every component of the local cluster in one binary.
//
// It dispatches on the name it is run as (the basename of argv[0]), so that
// one link of the shared packages serves every component through symlinks:
// bin/kube-apiserver -> k8s, bin/kubectl -> k8s, and so on. Run as "k8s" it
// takes the component's name as its first argument instead.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	kubectl "k8s.io/kubectl/pkg/cmd"
)

// components maps a command name to the function that runs it and returns
// the process's exit code. Each one does what that command's own main does.
var components = map[string]func() int{
	"kube-apiserver": func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func() int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	},
	"kube-scheduler": func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubelet":        func() int { return cli.Run(kubelet.NewKubeletCommand(nil)) },
	"kube-proxy":     func() int { return cli.Run(proxy.NewProxyCommand()) },
	// kubectl's own main prints errors itself, hence RunNoErrOutput.
	"kubectl": func() int { return cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()) },
	"etcd": func() int {
		etcdmain.Main(os.Args)
		return 0
	},
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

// Command cni-runtime runs a CNI network config through libcni, the library container runtimes
// (containerd, CRI-O, the kubelet) use to invoke plugin chains, exactly as they do: it picks the
// config from a directory the way they pick it, injects prevResult between plugins, caches
// results for DEL and CHECK, and passes CNI_* variables and CNI_ARGS.
//
// Used by the cni_chain integration suite; built offline against Debian's
// golang-github-appc-cni-dev (GO111MODULE=off GOPATH=/usr/share/gocode).
//
//	cni-runtime add|check|del -conf-dir DIR -bin-dirs A:B -cache-dir DIR \
//	    -netns PATH -container-id ID [-ifname eth0] [-args 'K=V;K=V']
//
// On success ADD prints the chain's result on stdout. A plugin error is printed on stdout as
// the plugin's CNI error object ({"code","msg","details"}) with exit status 2; anything else
// fails with exit status 1 and a message on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: cni-runtime add|check|del [flags]")
	}
	command := os.Args[1]
	flags := flag.NewFlagSet(command, flag.ExitOnError)
	confDir := flags.String("conf-dir", "", "network config directory")
	binDirs := flags.String("bin-dirs", "", "plugin directories, ':'-separated (CNI_PATH)")
	cacheDir := flags.String("cache-dir", "", "result cache directory")
	netns := flags.String("netns", "", "the sandbox's network namespace path")
	containerID := flags.String("container-id", "", "the sandbox id")
	ifName := flags.String("ifname", "eth0", "interface name inside the sandbox")
	cniArgs := flags.String("args", "", "CNI_ARGS, 'K=V;K=V'")
	_ = flags.Parse(os.Args[2:])

	list, err := primaryNetwork(*confDir)
	if err != nil {
		fail(err.Error())
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(*binDirs, ":"), *cacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: *containerID, NetNS: *netns, IfName: *ifName}
	for _, pair := range strings.Split(*cniArgs, ";") {
		if k, v, ok := strings.Cut(pair, "="); ok {
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	ctx := context.Background()
	switch command {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			pluginFail(err)
		}
		if err := result.Print(); err != nil {
			fail(err.Error())
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			pluginFail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			pluginFail(err)
		}
	default:
		fail("unknown command " + command)
	}
}

// primaryNetwork picks the config as runtimes do: the first file in lexical order with a
// .conf, .conflist or .json extension that loads; a single plugin config becomes a list.
func primaryNetwork(dir string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	for _, file := range files {
		if strings.HasSuffix(file, ".conflist") {
			list, err := libcni.ConfListFromFile(file)
			if err == nil && len(list.Plugins) > 0 {
				return list, nil
			}
			continue
		}
		conf, err := libcni.ConfFromFile(file)
		if err != nil || conf.Network.Type == "" {
			continue
		}
		if list, err := libcni.ConfListFromConf(conf); err == nil {
			return list, nil
		}
	}
	return nil, fmt.Errorf("no valid network config in %s", dir)
}

func pluginFail(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out, _ := json.Marshal(cniErr)
		fmt.Println(string(out))
		os.Exit(2)
	}
	fail(err.Error())
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "cni-runtime:", msg)
	os.Exit(1)
}

// A vCenter simulator for Coriolis tests: govmomi's simulator library (Debian's
// golang-github-vmware-govmomi-dev ships it without a vcsim command) with a chosen
// address, login and certificate. Built by coriolis/vcsim/__init__.py.
//
//	vcsim -listen 127.0.0.1:0 -user U -pass P -cert C -key K [-vm N] [-ds N]
//
// It prints one line, "URL <https://host:port/sdk> DIR <datastore folder>", then serves
// until its standard input closes or it gets SIGTERM.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("user", "user", "login user name")
	pass := flag.String("pass", "pass", "login password")
	cert := flag.String("cert", "", "TLS certificate (PEM)")
	key := flag.String("key", "", "TLS private key (PEM)")
	vms := flag.Int("vm", 2, "VMs per resource pool and standalone host")
	ds := flag.Int("ds", 1, "datastores")
	flag.Parse()

	model := simulator.VPX()
	model.Machine = *vms
	model.Datastore = *ds
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: create:", err)
		os.Exit(1)
	}
	defer model.Remove()

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: certificate:", err)
		os.Exit(1)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	server := model.Service.NewServer()
	defer server.Close()

	u := *server.URL
	u.User = nil
	fmt.Printf("URL %s\n", u.String())
	os.Stdout.Sync()

	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		done <- struct{}{}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		done <- struct{}{}
	}()
	<-done
}

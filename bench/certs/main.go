// Command certs writes a throwaway CA and two leaf certificates for the
// benchmark into -dir:
//
//	ca.pem                     the CA certificate (trust pool for the proxies)
//	link.pem,   link.key       leaf for the tracking domain link.example.test
//	origin.pem, origin.key     leaf for the stand-in origin: localhost, 127.0.0.1, ::1
//
// Keys are ECDSA P-256; everything is valid for one day. Nothing here is
// meant to outlive one benchmark run.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir := flag.String("dir", ".", "output directory")
	flag.Parse()

	caKey := newKey()
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "linktrack bench CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	check(err)
	ca, err = x509.ParseCertificate(caDER)
	check(err)
	writePEM(filepath.Join(*dir, "ca.pem"), "CERTIFICATE", caDER)

	leaf(*dir, "link", ca, caKey, []string{"link.example.test"}, nil)
	leaf(*dir, "origin", ca, caKey, []string{"localhost"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")})
}

// leaf writes <name>.pem and <name>.key, a server certificate signed by ca.
func leaf(dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dns []string, ips []net.IP) {
	key := newKey()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: dns[0]},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	check(err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	check(err)
	writePEM(filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
	writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", keyDER)
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	return k
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	check(err)
	return n
}

func writePEM(path, typ string, der []byte) {
	check(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

func check(err error) {
	if err != nil {
		log.Fatalf("certs: %v", err)
	}
}

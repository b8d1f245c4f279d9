package linktrack

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
)

// AppLinks names local files served in place of the origin's, for
// providers that expect the customer to host the app-link association
// files (SendGrid and SparkPost do; Iterable serves its own). Each file
// must hold valid JSON; it is read once, when the config loads, and
// served as application/json to GET and HEAD requests.
type AppLinks struct {
	// A file served at /apple-app-site-association and
	// /.well-known/apple-app-site-association, for iOS universal links.
	// Default: none; the origin answers those paths.
	AppleAppSiteAssociation string `json:"apple_app_site_association,omitempty"`

	// A file served at /.well-known/assetlinks.json, for Android app
	// links. Default: none; the origin answers that path.
	AssetLinks string `json:"assetlinks,omitempty"`
}

// appLinkFiles holds the loaded files by request path.
type appLinkFiles struct {
	byPath map[string][]byte
	config *AppLinks
}

// load reads and checks the configured files.
func (a *AppLinks) load() (*appLinkFiles, error) {
	files := &appLinkFiles{byPath: make(map[string][]byte), config: a}
	if a.AppleAppSiteAssociation != "" {
		body, err := readJSONFile("apple_app_site_association", a.AppleAppSiteAssociation)
		if err != nil {
			return nil, err
		}
		files.byPath["/apple-app-site-association"] = body
		files.byPath["/.well-known/apple-app-site-association"] = body
	}
	if a.AssetLinks != "" {
		body, err := readJSONFile("assetlinks", a.AssetLinks)
		if err != nil {
			return nil, err
		}
		files.byPath["/.well-known/assetlinks.json"] = body
	}
	if len(files.byPath) == 0 {
		return nil, nil
	}
	return files, nil
}

func readJSONFile(field, path string) ([]byte, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: reading file: %v", field, err)
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("%s: file '%s' does not hold valid JSON", field, path)
	}
	return body, nil
}

// serve answers the request from a local file if its path names one,
// and reports whether it did.
func (f *appLinkFiles) serve(w http.ResponseWriter, r *http.Request) bool {
	body, ok := f.byPath[r.URL.Path]
	if !ok {
		return false
	}
	header := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		header.Set("Allow", "GET, HEAD")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return true
	}
	header.Set("Content-Type", "application/json")
	header.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return true
}

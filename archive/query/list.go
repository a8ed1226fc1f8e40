package query

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tapline/tapline/archive/index"
	"github.com/tapline/tapline/archive/store"
)

// Chunk is a chunk found by List.
type Chunk struct {
	IndexKey string
	Index    *index.Index
}

// List returns the chunks whose index says they may hold packets matching
// f, sorted by VNI and key (that is, by stream sequence), and the errors
// met on the way (an unreadable index does not stop the listing).
func List(ctx context.Context, st store.Store, f Filter) ([]Chunk, []error) {
	var errs []error
	vnis := f.VNIs
	if len(vnis) == 0 {
		dirs, err := st.Dirs(ctx, "")
		if err != nil {
			return nil, []error{err}
		}
		for _, d := range dirs {
			if v, ok := index.ParseVNIDir(d); ok {
				vnis = append(vnis, v)
			}
		}
	}
	from := time.Unix(0, f.FromNs).UTC().Truncate(time.Hour)
	to := time.Unix(0, f.ToNs).UTC()
	if f.ToNs == 0 {
		to = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	var keys []string
	for _, v := range vnis {
		vdir := fmt.Sprintf("vni=%d/", v)
		dates, err := st.Dirs(ctx, vdir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, d := range dates {
			ds, ok := strings.CutPrefix(d, "date=")
			if !ok {
				continue
			}
			day, err := time.Parse("2006-01-02", ds)
			if err != nil || day.Add(24*time.Hour).Before(from) || day.After(to) {
				continue
			}
			hours, err := st.Dirs(ctx, vdir+d+"/")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, h := range hours {
				var hh int
				if _, err := fmt.Sscanf(h, "hour=%d", &hh); err != nil {
					continue
				}
				start := day.Add(time.Duration(hh) * time.Hour)
				if start.Before(from) || !start.Before(to) {
					continue
				}
				ks, err := st.List(ctx, vdir+d+"/"+h+"/")
				if err != nil {
					errs = append(errs, err)
					continue
				}
				for _, k := range ks {
					if !strings.HasSuffix(k, index.IndexSuffix) {
						continue
					}
					// The key carries the time range: skip the index
					// of a chunk outside the range without reading it.
					if ki, ok := index.ParseKey(k); ok && !f.overlaps(ki.FirstNs, ki.LastNs) {
						continue
					}
					keys = append(keys, k)
				}
			}
		}
	}
	chunks := make([]Chunk, len(keys))
	ierrs := make([]error, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			b, err := st.Get(ctx, k)
			if err == nil {
				var x *index.Index
				if x, err = index.Decode(b); err == nil {
					if index.IndexKey(x.Chunk) != k {
						err = fmt.Errorf("index names chunk %s", x.Chunk)
					} else {
						chunks[i] = Chunk{IndexKey: k, Index: x}
					}
				}
			}
			if err != nil {
				ierrs[i] = fmt.Errorf("chunk index %s is unreadable: %w", k, err)
			}
		}()
	}
	wg.Wait()
	var out []Chunk
	for i, c := range chunks {
		if ierrs[i] != nil {
			errs = append(errs, ierrs[i])
			continue
		}
		if f.chunkCanMatch(c.Index) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Chunk) int {
		return cmp.Or(cmp.Compare(a.Index.VNI, b.Index.VNI), cmp.Compare(a.Index.FirstSeq, b.Index.FirstSeq), cmp.Compare(a.IndexKey, b.IndexKey))
	})
	return out, errs
}

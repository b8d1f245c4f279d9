package tenantstore

import (
	"context"
	"sync"
)

// loadBatch is how many records LoadParallel hands to one call of
// decode.
const loadBatch = 4096

// LoadParallel is Load for a caller that decodes records on several
// cores. It streams the state as Load does and hands it in batches of
// records, in domain order, to decode, which runs on up to workers
// goroutines at once; then it hands what decode returned to use, one
// batch at a time and in domain order, while later batches are being
// decoded. So use sees the records in Load's order, and needs no lock.
//
// Record values are valid until decode returns. The first error of
// decode or use stops the load and is returned as is; records after
// the failing batch are not used. Like Load, it fails with
// ErrCompacted when two compactions removed what it was reading.
func LoadParallel[T any](ctx context.Context, s *Store, workers int, decode func([]Record) (T, error), use func(T) error) (uint64, error) {
	h, _, err := s.ensureHead(ctx)
	if err != nil {
		return 0, err
	}
	workers = max(workers, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		v   T
		err error
	}
	type job struct {
		records []Record
		out     chan result
	}
	jobs := make(chan job)
	// ordered holds each batch's result channel in domain order
	ordered := make(chan chan result, 2*workers)
	var decoders sync.WaitGroup
	for range workers {
		decoders.Go(func() {
			for j := range jobs {
				v, err := decode(j.records)
				j.out <- result{v, err}
			}
		})
	}
	used := make(chan error, 1)
	go func() {
		var err error
		for out := range ordered {
			r := <-out
			if err != nil {
				continue // drain
			}
			if err = r.err; err == nil {
				err = use(r.v)
			}
			if err != nil {
				cancel()
			}
		}
		used <- err
	}()

	batch := make([]Record, 0, loadBatch)
	send := func() error {
		out := make(chan result, 1)
		select {
		case ordered <- out:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case jobs <- job{batch, out}:
		case <-ctx.Done():
			out <- result{err: ctx.Err()}
			return ctx.Err()
		}
		batch = make([]Record, 0, loadBatch)
		return nil
	}
	_, streamErr := s.stream(ctx, h, func(r Record) error {
		batch = append(batch, r)
		if len(batch) == loadBatch {
			return send()
		}
		return nil
	})
	if streamErr == nil && len(batch) > 0 {
		streamErr = send()
	}
	close(jobs)
	decoders.Wait()
	close(ordered)
	if err := <-used; err != nil {
		return 0, err
	}
	if streamErr != nil {
		return 0, streamErr
	}
	return h.Version, nil
}

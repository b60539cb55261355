package demo

import (
	"net/http"
	"strings"
	"time"
	"unicode"
)

// Message is a chat message.
type Message struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// Agent is a support agent seat.
type Agent struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Channel is a connected messaging channel (web widget, WhatsApp, ...).
type Channel struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Name string `json:"name"`
}

// Article is a knowledge-base article.
type Article struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Body  string `json:"body"`
}

type server struct {
	messages *collection[Message]
	agents   *collection[Agent]
	channels *collection[Channel]
	articles *collection[Article]

	// ticks and tickEvery shape the SSE stream; tests shorten the interval.
	ticks     int
	tickEvery time.Duration
}

// NewHandler returns the demo API with an empty in-memory store. It is safe
// for concurrent use.
func NewHandler() http.Handler {
	return newHandler(5, time.Second)
}

func newHandler(ticks int, every time.Duration) http.Handler {
	s := &server{
		messages:  newCollection[Message]("msg_"),
		agents:    newCollection[Agent]("agt_"),
		channels:  newCollection[Channel]("chn_"),
		articles:  newCollection[Article]("art_"),
		ticks:     ticks,
		tickEvery: every,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})

	mux.HandleFunc("POST /api/v1/messages", s.createMessage)
	mux.HandleFunc("GET /api/v1/messages", listOf(s.messages))

	mux.HandleFunc("POST /api/v1/agents", s.createAgent)
	mux.HandleFunc("GET /api/v1/agents", listOf(s.agents))
	mux.HandleFunc("DELETE /api/v1/agents/{id}", deleteFrom(s.agents, "agent"))

	mux.HandleFunc("POST /api/v1/channels", s.createChannel)
	mux.HandleFunc("GET /api/v1/channels", listOf(s.channels))
	mux.HandleFunc("DELETE /api/v1/channels/{id}", deleteFrom(s.channels, "channel"))

	mux.HandleFunc("POST /api/v1/kb/articles", s.createArticle)
	mux.HandleFunc("GET /api/v1/kb/articles", listOf(s.articles))
	mux.HandleFunc("DELETE /api/v1/kb/articles/{id}", deleteFrom(s.articles, "article"))

	mux.HandleFunc("POST /api/v1/ai/auto-reply", autoReply)
	mux.HandleFunc("GET /api/v1/events", s.events)
	return jsonFallback(mux)
}

func (s *server) createMessage(w http.ResponseWriter, r *http.Request) {
	var in struct{ Text string }
	if !decode(w, r, &in) || !require(w, [2]string{"text", in.Text}) {
		return
	}
	writeJSON(w, http.StatusCreated, s.messages.add(func(id string) Message {
		return Message{ID: id, Text: in.Text}
	}))
}

func (s *server) createAgent(w http.ResponseWriter, r *http.Request) {
	var in struct{ Name string }
	if !decode(w, r, &in) || !require(w, [2]string{"name", in.Name}) {
		return
	}
	writeJSON(w, http.StatusCreated, s.agents.add(func(id string) Agent {
		return Agent{ID: id, Name: in.Name}
	}))
}

func (s *server) createChannel(w http.ResponseWriter, r *http.Request) {
	var in struct{ Type, Name string }
	if !decode(w, r, &in) || !require(w, [2]string{"type", in.Type}) {
		return
	}
	// The README creates channels with only a type; name it after the type.
	if in.Name == "" {
		in.Name = in.Type
	}
	writeJSON(w, http.StatusCreated, s.channels.add(func(id string) Channel {
		return Channel{ID: id, Type: in.Type, Name: in.Name}
	}))
}

func (s *server) createArticle(w http.ResponseWriter, r *http.Request) {
	var in struct{ Title, Body string }
	if !decode(w, r, &in) || !require(w, [2]string{"title", in.Title}) {
		return
	}
	writeJSON(w, http.StatusCreated, s.articles.add(func(id string) Article {
		return Article{ID: id, Title: in.Title, Body: in.Body}
	}))
}

func listOf[T any](c *collection[T]) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.list())
	}
}

func deleteFrom[T any](c *collection[T], noun string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !c.remove(id) {
			writeError(w, http.StatusNotFound, "not_found", "no "+noun+" with id "+id)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// autoReply stands in for an LLM call: deterministic, so demos and tests can
// assert on it.
func autoReply(w http.ResponseWriter, r *http.Request) {
	var in struct{ Message string }
	if !decode(w, r, &in) || !require(w, [2]string{"message", in.Message}) {
		return
	}
	words := map[string]bool{}
	for _, w := range strings.FieldsFunc(strings.ToLower(in.Message), notLetter) {
		words[w] = true
	}
	reply := "Thanks for your message! An agent will follow up shortly."
	switch {
	case words["price"] || words["pricing"] || words["plan"] || words["plans"]:
		reply = "Our plans are Free, Mini and Pro. You can upgrade at any time from the billing page."
	case words["hello"] || words["hi"] || words["hey"]:
		reply = "Hi there! How can I help you today?"
	}
	writeJSON(w, http.StatusOK, map[string]string{"reply": reply})
}

func notLetter(r rune) bool { return !unicode.IsLetter(r) }

package pcapfilter

import (
	"fmt"
	"strings"
)

// token is one word or operator of an expression.
type token struct {
	text string
	pos  int // byte offset in the expression
}

// maxExpr bounds the length of an expression (and so the parser's work
// and recursion depth).
const maxExpr = 4096

// lex splits expr into words, parentheses and the operators ! && ||.
func lex(expr string) ([]token, error) {
	if len(expr) > maxExpr {
		return nil, fmt.Errorf("filter longer than %d bytes", maxExpr)
	}
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == '!':
			toks = append(toks, token{string(c), i})
			i++
		case c == '&' || c == '|':
			if i+1 >= len(expr) || expr[i+1] != c {
				return nil, fmt.Errorf("at %d: %q: want %c%c", i, c, c, c)
			}
			toks = append(toks, token{expr[i : i+2], i})
			i += 2
		case isWord(c):
			j := i
			for j < len(expr) && isWord(expr[j]) {
				j++
			}
			toks = append(toks, token{strings.ToLower(expr[i:j]), i})
			i = j
		default:
			return nil, fmt.Errorf("at %d: unexpected character %q", i, c)
		}
	}
	return toks, nil
}

func isWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == ':' || c == '/' || c == '-' || c == '_'
}
